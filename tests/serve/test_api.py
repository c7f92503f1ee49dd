"""The official `openai` client against a live genforge server: models, completions, chat (streaming
included), stop strings, n, seeds, usage, embeddings; and genforge's /v1/classify, /health, /metrics."""

import base64

import httpx
import numpy as np
import openai
import pytest

from genforge.generate import generate


def test_models_lists_every_served_folder(server, oai):
    url, _ = server
    models = oai(url).models.list()
    assert [m.id for m in models.data] == ["tiny", "cls", "gpt2"]
    assert oai(url).models.retrieve("cls").id == "cls"
    with pytest.raises(openai.NotFoundError):
        oai(url).models.retrieve("nope")


def test_completion_equals_generate_and_counts_usage(server, llama_dir, oai):
    url, _ = server
    out = oai(url).completions.create(model="tiny", prompt="To be, or not", max_tokens=12, temperature=0)
    expected = generate(llama_dir, "To be, or not", max_new_tokens=12, temperature=0)[0]
    assert out.choices[0].text == expected
    assert out.object == "text_completion" and out.id.startswith("cmpl-")
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.usage.prompt_tokens > 0 and out.usage.completion_tokens <= 12
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_several_prompts_and_n_choices_in_openai_order(server, llama_dir, oai):
    url, _ = server
    prompts = ["First Citizen:", "ROMEO: what light"]
    out = oai(url).completions.create(model="tiny", prompt=prompts, n=2, max_tokens=6, temperature=0)
    texts = [c.text for c in sorted(out.choices, key=lambda c: c.index)]
    expected = generate(llama_dir, prompts, max_new_tokens=6, temperature=0)
    assert texts == [expected[0], expected[0], expected[1], expected[1]]
    assert 0 < out.usage.completion_tokens <= 24


def test_chat_stream_matches_the_whole_reply(server, oai):
    url, _ = server
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    whole = oai(url).chat.completions.create(model="tiny", messages=messages, max_tokens=20, temperature=0)
    assert whole.object == "chat.completion" and whole.choices[0].message.role == "assistant"
    stream = oai(url).chat.completions.create(model="tiny", messages=messages, max_tokens=20, temperature=0,
                                                 stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_raw_stream_ends_with_done(server):
    url, _ = server
    body = {"model": "tiny", "prompt": "Hi", "max_tokens": 5, "stream": True, "temperature": 0}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-request-id"]
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


def test_stop_string_cuts_the_text_and_is_not_returned(server, oai):
    url, _ = server
    c = oai(url)
    full = c.completions.create(model="tiny", prompt="Once", max_tokens=30, temperature=0,
                                extra_body={"ignore_eos": True}).choices[0].text
    stop = full[len(full) // 2:len(full) // 2 + 2]
    assert stop.strip(), "the random model should produce text to cut"
    cut = c.completions.create(model="tiny", prompt="Once", max_tokens=30, temperature=0, stop=[stop],
                               extra_body={"ignore_eos": True}).choices[0]
    assert cut.text == full[:full.index(stop)] and cut.finish_reason == "stop"
    streamed = c.completions.create(model="tiny", prompt="Once", max_tokens=30, temperature=0, stop=stop,
                                    stream=True, extra_body={"ignore_eos": True})
    assert "".join(ch.choices[0].text for ch in streamed) == cut.text


def test_seeded_sampling_is_reproducible(server, oai):
    url, _ = server
    c = oai(url)

    def sample(seed):
        return c.completions.create(model="tiny", prompt="The", max_tokens=10, temperature=1.0, seed=seed,
                                    extra_body={"ignore_eos": True}).choices[0].text

    assert sample(7) == sample(7)
    assert len({sample(s) for s in range(4)}) > 1


def test_hf_backend_model_serves_too(server, gpt2_dir, oai):
    url, _ = server
    out = oai(url).completions.create(model="gpt2", prompt="Good morrow", max_tokens=8, temperature=0)
    assert out.choices[0].text == generate(gpt2_dir, "Good morrow", max_new_tokens=8, temperature=0)[0]


def test_embeddings_float_and_base64(server, oai):
    url, _ = server
    c = oai(url)
    out = c.embeddings.create(model="tiny", input=["hello world", "a much longer sentence about kings"])
    assert len(out.data) == 2 and len(out.data[0].embedding) == 64 and out.usage.prompt_tokens > 0
    assert [np.linalg.norm(d.embedding) for d in out.data] == pytest.approx([1.0, 1.0], abs=1e-5)  # as OpenAI's
    raw = httpx.post(f"{url}/v1/embeddings", json={"model": "tiny", "input": "hello world",
                                                    "encoding_format": "float"}, timeout=60).json()
    assert raw["data"][0]["embedding"] == pytest.approx(out.data[0].embedding, rel=1e-4, abs=1e-6)  # batched with padding vs alone
    b64 = httpx.post(f"{url}/v1/embeddings", json={"model": "tiny", "input": "hello world",
                                                    "encoding_format": "base64"}, timeout=60).json()
    decoded = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    assert decoded.tolist() == pytest.approx(out.data[0].embedding, rel=1e-4, abs=1e-6)
    assert len(c.embeddings.create(model="cls", input="good news").data[0].embedding) == 32


def test_classify_returns_labels_and_probabilities(server, classifier_dir):
    from genforge.finetune.classifier import load_classifier, predict_probs

    url, _ = server
    texts = ["good news 3", "bad news 7"]
    r = httpx.post(f"{url}/v1/classify", json={"model": "cls", "input": texts}, timeout=60)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    model, tok, info = load_classifier(classifier_dir)
    probs = predict_probs(model, tok, texts, seq_len=info["seq_len"], multi_label=False)
    for row, expected in zip(data, probs, strict=True):
        assert [row["scores"][lab] for lab in info["labels"]] == pytest.approx(expected.tolist(), abs=1e-5)
        assert row["label"] == info["labels"][int(expected.argmax())]
    wrong = httpx.post(f"{url}/v1/classify", json={"model": "tiny", "input": "x"}, timeout=60)
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "model"


def test_health_and_metrics(server, oai):
    url, _ = server
    oai(url).completions.create(model="tiny", prompt="x", max_tokens=3)
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    text = httpx.get(f"{url}/metrics").text
    for name in ("genforge_requests_total", "genforge_request_seconds_bucket", "genforge_tokens_total",
                 "genforge_time_to_first_token_seconds_bucket", "genforge_queue_depth", "genforge_batch_size",
                 "genforge_batch_rows_bucket", "genforge_sequences_total"):
        assert name in text
    assert 'genforge_requests_total{code="200",route="/v1/completions"}' in text
