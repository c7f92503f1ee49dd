import json

import pytest
import torch

from genforge.artifacts import read_manifest
from genforge.compress.config import CompressConfig
from genforge.compress.measure import parameters, size_on_disk
from genforge.compress.prune import prune_unstructured
from genforge.compress.qlinear import QLinear
from genforge.compress.quantize import quantize_model
from genforge.compress.run import compress
from genforge.errors import ArtifactError
from genforge.finetune.classifier import load_classifier, predict_probs
from genforge.generate import generate
from genforge.generate.decoder import load_decoder
from genforge.models.load import load_model

KEYS = {"params", "nonzero_params", "size_bytes", "linear_bytes", "latency_ms_p50", "latency_ms_p90", "throughput"}


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def int8_lm(tmp_path_factory, lm_dir, packed):
    out = tmp_path_factory.mktemp("int8") / "lm"
    compress(CompressConfig(model=lm_dir, method="int8", out=out, eval_data=packed, measure_steps=4, eval_batches=2,
                            seq_len=64, threads=1))
    return out


def test_int8_lm_is_smaller_reloads_and_stays_close(int8_lm, lm_dir):
    report = json.loads((int8_lm / "report.json").read_text())
    original, compressed = report["original"], report["compressed"]
    assert KEYS | {"perplexity", "bits_per_byte"} <= set(original) and set(original) == set(compressed)
    assert compressed["linear_bytes"] < original["linear_bytes"] / 3.5  # int8 + a scale per row
    assert compressed["size_bytes"] < original["size_bytes"] / 3
    assert compressed["params"] == original["params"]
    assert abs(compressed["perplexity"] / original["perplexity"] - 1) < 0.02
    assert (int8_lm / "report.png").stat().st_size > 0 and (int8_lm / "README.md").is_file()
    manifest = json.loads((int8_lm / "manifest.json").read_text())
    assert manifest["stage"] == "compress" and manifest["parent"]["stage"] == "pretrain"

    model, objective = load_model(int8_lm)  # the normal loading path
    assert objective == "clm" and any(isinstance(m, QLinear) for m in model.modules())
    original_model, _ = load_model(lm_dir)
    ids = torch.randint(6, 320, (2, 24), generator=torch.Generator().manual_seed(0))
    a, b = logits(original_model, ids), logits(model, ids)
    assert (a - b).abs().max() / a.abs().max() < 0.05
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9


def test_int8_lm_generates_through_the_fast_decoder(int8_lm, lm_dir):
    decoder = load_decoder(int8_lm)
    assert decoder.backend == "fast"
    texts = generate(decoder, ["ROMEO:", "To be"], max_new_tokens=12, temperature=0)
    reference = generate(lm_dir, ["ROMEO:", "To be"], max_new_tokens=12, temperature=0)
    assert all(texts) and sum(a == b for a, b in zip(texts, reference, strict=True)) >= 1


def test_int8_fast_decoder_matches_the_model_forward(int8_lm):
    fast, hf = load_decoder(int8_lm), load_decoder(int8_lm, backend="hf")  # fbgemm's op called directly vs QLinear
    assert (fast.backend, hf.backend) == ("fast", "hf")
    prompts = ["ROMEO:", "To be"]
    assert generate(fast, prompts, max_new_tokens=12, temperature=0) == generate(hf, prompts, max_new_tokens=12,
                                                                                 temperature=0)


def test_quantized_folder_is_refused_by_plain_from_pretrained(int8_lm):
    from transformers import AutoModelForCausalLM

    assert not (int8_lm / "model.safetensors").exists()  # no random weights can be loaded from it
    with pytest.raises(OSError):
        AutoModelForCausalLM.from_pretrained(int8_lm)


def test_a_compressed_chat_model_keeps_its_stop_ids(int8_lm, tmp_path):
    """The loader builds a compressed model from its config: the saved generation_config.json (a chat model's
    [eos, <|im_end|>]) must be applied, or `generate` and /v1/completions run on past a reply."""
    import shutil

    chat = shutil.copytree(int8_lm, tmp_path / "chat")
    gen = json.loads((chat / "generation_config.json").read_text())
    (chat / "generation_config.json").write_text(json.dumps({**gen, "eos_token_id": [2, 5]}))
    model, _ = load_model(chat)
    assert model.generation_config.eos_token_id == [2, 5]
    assert set(load_decoder(chat).eos_ids) == {2, 5}


def test_the_card_of_a_quantized_folder_does_not_claim_transformers(int8_lm, lm_dir):
    """Plain transformers refuses the folder, so its front matter names no `library_name: transformers`; the
    Lineage table lists the inputs with their hashes, as the pretrain card does."""
    import yaml

    card = (int8_lm / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert "library_name" not in front and front["pipeline_tag"] == "text-generation"
    assert {"genforge", "compress", "int8"} <= set(front["tags"])
    train_bin = read_manifest(lm_dir)["inputs"][0]
    assert f"`train.bin` {train_bin['sha256'][:12]}" in card and "| 0 | compress |" in card


def test_int4_lm_is_much_smaller(tmp_path, lm_dir, packed):
    out = compress(CompressConfig(model=lm_dir, method="int4", group_size=32, out=tmp_path / "int4", eval_data=packed,
                                  measure_steps=4, eval_batches=2, seq_len=64, threads=1))
    report = json.loads((out / "report.json").read_text())
    assert report["compressed"]["size_bytes"] < report["original"]["size_bytes"] / 4
    assert report["compressed"]["perplexity"] / report["original"]["perplexity"] < 1.1
    layout = json.loads((out / "compression.json").read_text())
    schemes = {spec["scheme"] for spec in layout["linears"].values()}
    assert "int4" in schemes and layout["linears"]["lm_head"]["scheme"] == "int8"  # the head stays int8
    assert load_decoder(out).backend == "fast"  # generate, chat and serve run it on the batched Llama forward


@pytest.fixture(scope="module")
def int8_classifier(tmp_path_factory, classifier_dir, sentiment_csv):
    return compress(CompressConfig(model=classifier_dir, method="int8", int8_scheme="weight-only",
                                   out=tmp_path_factory.mktemp("int8") / "c", eval_data=sentiment_csv,
                                   measure_steps=4, threads=1))


def test_int8_classifier_predicts_like_the_original(classifier_dir, int8_classifier):
    out = int8_classifier
    report = json.loads((out / "report.json").read_text())
    assert {"accuracy", "macro_f1"} <= set(report["compressed"])
    assert report["compressed"]["size_bytes"] < report["original"]["size_bytes"] / 2.5
    assert abs(report["compressed"]["accuracy"] - report["original"]["accuracy"]) <= 0.05
    texts = ["profits rose sharply 3", "losses widened this quarter 7"]
    (m1, t1, info), (m2, t2, _) = load_classifier(classifier_dir), load_classifier(out)
    p1 = predict_probs(m1, t1, texts, seq_len=info["seq_len"], multi_label=False)
    p2 = predict_probs(m2, t2, texts, seq_len=info["seq_len"], multi_label=False)
    assert abs(p1 - p2).max() < 0.05


def test_a_corrupt_compression_file_is_one_line(int8_lm, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(int8_lm, broken)
    (broken / "compression.json").write_text('{"loader": "zip"}')
    with pytest.raises(ArtifactError, match="names no loader"):
        load_model(broken)


@pytest.mark.parametrize("method", ["int8", "onnx-int8"])
def test_masked_lm_compresses_and_scores(tmp_path, mlm_dir, packed, method):
    out = compress(CompressConfig(model=mlm_dir, method=method, out=tmp_path / method, eval_data=packed,
                                  measure_steps=4, eval_batches=2, seq_len=64, threads=1))
    report = json.loads((out / "report.json").read_text())
    assert report["compressed"]["throughput_unit"] == "tokens/s"
    assert abs(report["compressed"]["perplexity"] / report["original"]["perplexity"] - 1) < 0.05
    model, objective = load_model(out)
    assert objective == "mlm"
    assert model(input_ids=torch.randint(6, 320, (1, 16))).logits.shape == (1, 16, 320)


def test_int8_folders_serve_like_they_generate_and_classify(tmp_path, int8_lm, int8_classifier, live, oai):
    """What `genforge compress` writes is what `genforge serve` loads: completions of the int8 LM equal its
    greedy `generate`, and /v1/classify of the int8 classifier its `predict_probs`."""
    import httpx

    from genforge.serve.config import ServeConfig

    cfg = ServeConfig(model=int8_lm, name="lm8", variant=[f"cls8={int8_classifier}"],
                      db=f"sqlite:///{tmp_path / 'serve.db'}", max_batch=4, cache_len=1024)
    texts = ["profits rose sharply 3", "losses widened this quarter 7"]
    with live(cfg) as (url, _):
        out = oai(url).completions.create(model="lm8", prompt="ROMEO:", max_tokens=12, temperature=0)
        scored = httpx.post(f"{url}/v1/classify", json={"model": "cls8", "input": texts}, timeout=60)
    assert out.choices[0].text == generate(int8_lm, "ROMEO:", max_new_tokens=12, temperature=0)[0]
    assert scored.status_code == 200, scored.text
    model, tok, info = load_classifier(int8_classifier)
    probs = predict_probs(model, tok, texts, seq_len=info["seq_len"], multi_label=False)
    for row, expected in zip(scored.json()["data"], probs, strict=True):
        assert [row["scores"][lab] for lab in info["labels"]] == pytest.approx(expected.tolist(), abs=1e-5)


def test_nonzero_count_of_a_pruned_then_quantised_model_sees_the_zeros(lm_dir):
    model, _ = load_model(lm_dir)
    prune_unstructured(model, 0.5)
    before = parameters(model)
    quantize_model(model, "int8-dynamic")
    after = parameters(model)
    assert after["params"] == before["params"]
    # a pruned zero stays zero through int8; a few tiny weights round to zero too
    assert 0.98 * before["nonzero_params"] <= after["nonzero_params"] <= before["nonzero_params"]


def test_size_of_a_lora_adapter_folder_includes_its_base(tmp_path):
    """An adapter folder serves as its base with the adapter merged: the original's size is not the
    adapter's few tensors (the report said a compressed model was 38x larger than its original)."""
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForMaskedLM

    base, adapter = tmp_path / "base", tmp_path / "adapter"
    BertForMaskedLM(BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=32)).save_pretrained(base)
    peft = get_peft_model(BertForMaskedLM.from_pretrained(base), LoraConfig(r=2, target_modules=["query", "value"]))
    peft.save_pretrained(adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": str(base)}))
    adapter_only = (adapter / "adapter_model.safetensors").stat().st_size
    assert size_on_disk(adapter) == size_on_disk(base) + adapter_only


def test_the_report_says_slower_when_the_compressed_model_is_slower():
    from genforge.compress.report import rows

    report = {"original": {"latency_ms_p50": 1.0}, "compressed": {"latency_ms_p50": 1.476},
              "change": {"latency_ms_p50": 1.476, "speedup_p50": 1 / 1.476}}
    assert [r[3] for r in rows(report) if r[0].startswith("latency p50")] == ["x1.476 (1.48x slower)"]
    report["change"].update(latency_ms_p50=0.5, speedup_p50=2.0)
    assert [r[3] for r in rows(report) if r[0].startswith("latency p50")] == ["x0.500 (2.00x faster)"]


def test_report_colours_an_unchanged_accuracy_as_no_worse():
    """report.png coloured `accuracy x1.000` red (worse) while `perplexity x1.000` was green."""
    from genforge.compress.report import ratio_colour

    green, red = ratio_colour(0.5, True), ratio_colour(2.0, True)
    assert green != red
    assert ratio_colour(1.0, False) == green and ratio_colour(1.0, True) == green
    assert ratio_colour(1.1, False) == green and ratio_colour(0.9, False) == red


def test_int4_report_says_which_group_each_layer_got(tmp_path, lm_dir):
    """An asked --group-size that does not divide a layer's inputs falls back to a smaller group (the tiny
    preset's 352-wide down projections: 32) and the head stays int8; the report used to show only the asked size."""
    out = compress(CompressConfig(model=lm_dir, method="int4", group_size=128, out=tmp_path / "int4",
                                  measure_steps=2, threads=1))
    settings = json.loads((out / "report.json").read_text())["settings"]
    assert settings["group_size"] == 128
    assert settings["layers"] == {"int4 g128": 12, "int4 g32": 2, "int8": 1}
    assert "Quantised layers: int4 g128 x12, int4 g32 x2, int8 x1." in (out / "README.md").read_text()


def test_measuring_shows_progress(capsys, lm_dir, classifier_dir, sentiment_csv):
    """The measurement (speed rounds; accuracy over a test set of thousands) ran for a minute or more with no
    sign of life after the last training bar."""
    from genforge.compress.measure import classifier_quality, speed, speed_inputs
    from genforge.compress.subject import load_subject
    from genforge.finetune.data import read_labelled

    lm = load_subject(lm_dir)
    speed([lm], speed_inputs(lm, None, None), steps=2, rounds=2)
    assert "speed: 100%" in capsys.readouterr().err
    classifier = load_subject(classifier_dir)
    classifier_quality(classifier, read_labelled(sentiment_csv, "text", "label", False), "original")
    assert "accuracy (original): 100%" in capsys.readouterr().err
