import json

import httpx
import torch

from genforge.compress.config import CompressConfig
from genforge.compress.onnx import export_int8
from genforge.compress.run import compress
from genforge.compress.subject import Subject
from genforge.finetune.classifier import load_classifier, predict_probs
from genforge.generate import generate
from genforge.generate.decoder import load_decoder
from genforge.models.load import load_model
from genforge.serve.config import ServeConfig


def test_onnx_int8_decoder_scores_and_generates_like_the_original(tmp_path, lm_dir, packed, settings, live, oai):
    out = compress(CompressConfig(model=lm_dir, method="onnx-int8", eval_data=packed, out=tmp_path / "o", **settings))
    report = json.loads((out / "report.json").read_text())
    assert (out / "model.onnx").is_file() and not (out / "model.safetensors").exists()
    assert (out / "generation_config.json").is_file()  # its stop ids, for the loader to apply
    assert report["compressed"]["size_bytes"] < report["original"]["size_bytes"] / 2.5
    assert abs(report["compressed"]["perplexity"] / report["original"]["perplexity"] - 1) < 0.03

    onnx, _ = load_model(out)
    original, _ = load_model(lm_dir)
    ids = torch.randint(6, 320, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = original(input_ids=ids).logits, onnx(input_ids=ids).logits
    assert (a - b).abs().max() / a.abs().max() < 0.05

    decoder = load_decoder(out)
    assert decoder.backend == "onnx"
    prompts = ["ROMEO:", "To be, or not"]  # different lengths: a left-padded batch through the ORT cache
    texts = generate(decoder, prompts, max_new_tokens=10, temperature=0)
    alone = [generate(decoder, p, max_new_tokens=10, temperature=0)[0] for p in prompts]
    assert texts == alone and all(texts)

    served = ServeConfig(model=out, name="onnx", db=f"sqlite:///{tmp_path / 'serve.db'}", max_batch=4, cache_len=1024)
    with live(served) as (url, _):  # `genforge serve` runs the ONNX graph through the same decoder
        reply = oai(url).completions.create(model="onnx", prompt=prompts[0], max_tokens=10, temperature=0)
        embedding = httpx.post(f"{url}/v1/embeddings", json={"model": "onnx", "input": "hi"}, timeout=60)
    assert reply.choices[0].text == texts[0]
    assert embedding.status_code == 400 and "ONNX Runtime graph" in embedding.json()["error"]["message"]


def test_onnx_int8_classifier_predicts_like_the_original(tmp_path, classifier_dir, sentiment_csv, settings):
    out = compress(CompressConfig(model=classifier_dir, method="onnx-int8", eval_data=sentiment_csv,
                                  out=tmp_path / "c", **settings))
    report = json.loads((out / "report.json").read_text())
    assert report["compressed"]["params"] == report["original"]["params"]
    texts = ["profits rose sharply 1", "weak demand hit the stock 4"]
    (m1, t1, info), (m2, t2, _) = load_classifier(classifier_dir), load_classifier(out)
    p1 = predict_probs(m1, t1, texts, seq_len=info["seq_len"], multi_label=False)
    p2 = predict_probs(m2, t2, texts, seq_len=info["seq_len"], multi_label=False)
    assert abs(p1 - p2).max() < 0.05


def test_export_leaves_the_original_in_eval_mode(tmp_path):
    """torch.onnx.export restores its wrapper's training flag down into the model: the original, measured
    next as the baseline, must not come back with dropout on (slower, and its outputs random)."""
    from transformers import BertConfig, BertForMaskedLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    models = {"mlm": BertForMaskedLM(BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1,
                                                num_attention_heads=2, intermediate_size=64,
                                                max_position_embeddings=32)),
              "clm": LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                                                  num_hidden_layers=1, num_attention_heads=2, attention_dropout=0.1,
                                                  max_position_embeddings=32))}
    ids = torch.randint(5, 120, (2, 8))
    for kind, model in models.items():
        model.eval()
        export_int8(Subject(kind, model, None), tmp_path)
        assert not any(m.training for m in model.modules()), kind
        with torch.no_grad():
            torch.testing.assert_close(model(input_ids=ids).logits, model(input_ids=ids).logits)


def test_onnx_int8_of_a_pruned_model_keeps_its_zeros_in_the_report(tmp_path, lm_dir, settings):
    """The ONNX model reported every parameter as non-zero, so a pruned model's sparsity vanished from the report
    (x1.000 and more non-zero than the original); symmetric int8 keeps a zero weight zero."""
    sparse = compress(CompressConfig(model=lm_dir, method="prune", sparsity=0.5, out=tmp_path / "sparse", **settings))
    out = compress(CompressConfig(model=sparse, method="onnx-int8", out=tmp_path / "onnx", **settings))
    report = json.loads((out / "report.json").read_text())
    original, compressed = report["original"], report["compressed"]
    assert original["nonzero_params"] < 0.8 * original["params"]
    assert compressed["nonzero_params"] == original["nonzero_params"]
