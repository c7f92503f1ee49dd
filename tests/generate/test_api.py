"""The Python API: generate(...) -> list[str] and stream(...) over a saved tiny model."""

import pytest
from transformers import AutoModelForCausalLM

from genforge.errors import ConfigError, DataError
from genforge.generate import generate, load_decoder, stream
from genforge.generate.api import read_prompts

PROMPTS = ["First Citizen:", "To be, or not", "a", "", "春眠不觉晓"]


@pytest.fixture(scope="module")
def decoder(llama_dir):
    return load_decoder(llama_dir)


def test_batched_greedy_equals_one_by_one_in_prompt_order(decoder):
    batched = generate(decoder, PROMPTS, temperature=0, max_new_tokens=12, batch_size=3)
    single = [generate(decoder, p, temperature=0, max_new_tokens=12)[0] for p in PROMPTS]
    assert batched == single
    assert len(set(batched)) > 1


def test_stream_pieces_add_up_to_generate(decoder):
    for prompt, seed in (("First Citizen:", 3), ("春眠", 4)):
        kwargs = dict(temperature=1.0, top_k=50, seed=seed, max_new_tokens=20)
        pieces = list(stream(decoder, prompt, **kwargs))
        assert len(pieces) > 1 and "".join(pieces) == generate(decoder, prompt, **kwargs)[0]


def test_seeded_sampling_is_reproducible(decoder):
    kwargs = dict(temperature=1.2, top_p=0.9, max_new_tokens=16)
    a = generate(decoder, PROMPTS, seed=11, **kwargs)
    assert a == generate(decoder, PROMPTS, seed=11, **kwargs)
    assert a != generate(decoder, PROMPTS, seed=12, **kwargs)


def test_stop_string_cuts_the_completion(decoder):
    full = generate(decoder, "First Citizen:", temperature=0, max_new_tokens=30)[0]
    stop = full[8:11]
    cut = generate(decoder, "First Citizen:", temperature=0, max_new_tokens=30, stop=[stop])[0]
    assert cut == full[:full.index(stop)]
    assert "".join(stream(decoder, "First Citizen:", temperature=0, max_new_tokens=30, stop=[stop])) == cut


def test_a_stop_string_on_the_last_allowed_token_finishes_as_stop(decoder):
    from genforge.generate import SamplingParams
    from genforge.generate.api import complete

    greedy = SamplingParams(temperature=0)
    five, six = (complete(decoder, ["First Citizen:"], greedy, n)[0].completion for n in (5, 6))
    stop = six[len(five):]  # the text the sixth token adds
    assert stop and stop not in five
    done = complete(decoder, ["First Citizen:"], greedy, 6, stop=[stop])[0]
    assert (done.completion, done.finish_reason) == (five, "stop")


def test_chat_wraps_the_prompt_and_stops_at_im_end(decoder):
    assert decoder.encode("hi", chat=True) == decoder.tokenizer(
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    im_end = decoder.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert decoder.stop_ids(chat=True) == (*decoder.stop_ids(), im_end)
    ids = decoder.encode("hi", chat=True)
    state = decoder.prefill([ids], None, 64, decoder.stop_ids(chat=True))
    state.logits = state.logits.clone()
    state.logits[0, im_end] = 1e4  # the model "answers" with <|im_end|> right away
    decoder.decode_step(state)
    assert state.finish_reason == ["eos"] and state.tokens == [[]]


def test_model_object_needs_its_tokenizer(llama_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    assert generate(model, "a", tokenizer=tokenizer, temperature=0, max_new_tokens=5) == \
        generate(llama_dir, "a", temperature=0, max_new_tokens=5)
    with pytest.raises(ConfigError, match="tokenizer"):
        generate(model, "a")


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(temperature=-1), "temperature"),
    (dict(top_p=0), "top_p"), (dict(stop=[""]), "stop"), (dict(beams=2), "unknown sampling option"),
])
def test_bad_options_are_refused(decoder, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        generate(decoder, "a", **kwargs)


def test_prompts_that_are_not_text_are_refused_in_one_line(decoder):
    """Token ids or a list handed to stream() used to fail inside the tokenizer or torch."""
    with pytest.raises(ConfigError, match="prompts must be strings; got int at position 1"):
        generate(decoder, ["a", 5])
    with pytest.raises(ConfigError, match="stream takes one prompt string, not a list"):
        list(stream(decoder, ["a", "b"]))


def test_a_prompt_too_long_for_the_context_is_refused_before_any_batch_runs(decoder):
    """Sorted by length, the longest prompt decodes last: it must not fail after hours of the others' work,
    and the error names it."""
    from genforge.generate.api import complete
    from genforge.generate.config import SamplingParams

    batches = []
    prompts = ["a", "b", "word " * decoder.context, "c"]
    with pytest.raises(ConfigError, match=r"prompt 3 \('word word .*tokens, which leaves no room"):
        complete(decoder, prompts, SamplingParams(), 2, batch_size=1, on_batch=batches.append)
    assert batches == []


def test_read_prompts_text_and_jsonl(tmp_path):
    (tmp_path / "p.txt").write_text("one\n\n two \n", encoding="utf-8")
    assert read_prompts(tmp_path / "p.txt") == ["one", " two "]
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b\\nc", "id": 3}\n', encoding="utf-8")
    assert read_prompts(tmp_path / "p.jsonl") == ["a", "b\nc"]
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="bad.jsonl:1"):
        read_prompts(tmp_path / "bad.jsonl")
