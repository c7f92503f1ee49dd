"""Text VAE: annealing schedules, free bits, word dropout, training in the engine, resume and sampling."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from genforge.artifacts import read_manifest
from genforge.errors import ArtifactError, ConfigError, DataError
from genforge.paradigms.config import MAX_SAMPLES, VaeConfig, VaeSampleConfig
from genforge.paradigms.vae import (
    TextVae,
    VaeObjective,
    collate,
    free_bits_kl,
    gaussian_kl,
    kl_weight,
    vae_metrics,
    vae_train,
    word_dropout,
)
from genforge.paradigms.vae_sample import print_sentences, vae_sample


def test_kl_annealing_schedules():
    for schedule in ("linear", "logistic"):
        weights = [kl_weight(s, schedule, 100) for s in range(0, 201, 10)]
        assert weights[0] < 0.01 and weights[-1] > 0.99
        assert all(a <= b for a, b in zip(weights, weights[1:], strict=False))
    assert kl_weight(50, "logistic", 100) == pytest.approx(0.5)
    assert kl_weight(25, "linear", 100) == pytest.approx(0.25)
    assert kl_weight(0, "none", 100) == 1.0


def test_gaussian_kl_and_free_bits():
    assert torch.allclose(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2, 3))
    assert gaussian_kl(torch.tensor([[2.0]]), torch.zeros(1, 1)).item() == pytest.approx(2.0)
    mu = torch.tensor([[0.1, 3.0]], requires_grad=True)
    kl = gaussian_kl(mu, torch.zeros(1, 2))
    loss = free_bits_kl(kl, free_bits=0.5)  # dim 0 has KL 0.005 < 0.5: free; dim 1 has 4.5: charged
    assert loss.item() == pytest.approx(0.5 + 4.5)
    loss.backward()
    assert mu.grad[0, 0] == 0 and mu.grad[0, 1] > 0


def batch_of(sentences, weight=1.0):
    b = collate([np.array(s) for s in sentences], bos=1, eos=2, pad=0)
    b["kl_weight"] = torch.tensor([weight])
    return b


def test_collate_and_word_dropout():
    b = batch_of([[5, 6, 7], [8]])
    assert b["decoder_input"].tolist() == [[1, 5, 6, 7], [1, 8, 0, 0]]
    assert b["labels"].tolist() == [[5, 6, 7, 2], [8, 2, -100, -100]]
    torch.manual_seed(0)
    dropped = word_dropout(b["decoder_input"], b["labels"], 0.999, mask_id=3)
    assert dropped[:, 0].tolist() == [1, 1]  # the start token stays
    assert dropped[0, 1:].tolist() == [3, 3, 3] and dropped[1, 1:].tolist() == [3, 0, 0]  # pads stay pads
    assert torch.equal(word_dropout(b["decoder_input"], b["labels"], 0.0, mask_id=3), b["decoder_input"])
    rates = word_dropout(torch.ones(200, 50, dtype=torch.long), torch.ones(200, 50, dtype=torch.long), 0.3, 3)
    assert (rates[:, 1:] == 3).float().mean().item() == pytest.approx(0.3, abs=0.02)


def test_padding_is_not_counted_as_tokens_read():
    """The engine counted every padded position of a VAE batch (it had no attention_mask), so tokens_per_s
    overstated the throughput by the padding to each batch's longest sentence."""
    from genforge.train.engine import tokens_read

    b = batch_of([[5, 6, 7], [8]])
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert tokens_read(b) == 4


def test_kl_weight_scales_the_loss():
    torch.manual_seed(0)
    model = TextVae(20, 8, 8, 4)
    objective = VaeObjective(mask_id=3, word_dropout=0.0, free_bits=0.0)
    torch.manual_seed(1)
    low, _ = objective.loss(model, batch_of([[5, 6, 7]], 0.0))
    torch.manual_seed(1)
    high, metrics = objective.loss(model, batch_of([[5, 6, 7]], 1.0))
    assert high.item() == pytest.approx(low.item() + metrics["kl"].item() / 4, rel=1e-4)


def test_evaluation_is_a_function_of_the_weights_and_leaves_the_random_stream_alone():
    torch.manual_seed(0)
    model = TextVae(20, 8, 8, 4).eval()
    objective = VaeObjective(mask_id=3, word_dropout=0.0, free_bits=0.0)
    val = [np.array([5, 6, 7]), np.array([8, 9]), np.array([10, 11, 12, 13])]
    special = {"bos": 1, "eos": 2, "pad": 0}
    state = torch.random.get_rng_state()
    first = vae_metrics(model, objective, val, special)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(123)
    assert vae_metrics(model, objective, val, special) == first


def tiny(data, out, **over):
    cfg = dict(data=data, out=out, max_len=16, embed_size=16, hidden_size=16, latent_size=4, anneal_steps=10,
               max_steps=8, batch_size=8, eval_every=4, save_every=4)
    return VaeConfig(**{**cfg, **over})


def test_vae_trains_resumes_and_samples(packed, tmp_path):
    out = tmp_path / "vae"
    vae_train(tiny(packed, out, max_steps=4))
    vae_train(tiny(packed, out, resume=True, word_dropout=0.1))
    resumed = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()
               if '"resume"' in line]  # the VAE's own settings are compared like the engine's
    assert resumed[0]["changed"]["max_steps"] == [4, 8] and resumed[0]["changed"]["word_dropout"][1] == 0.1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "vae" and manifest["metrics"]["steps"] == 8
    metrics = manifest["metrics"]
    assert metrics["neg_elbo"] == pytest.approx(metrics["rec_nll"] + metrics["kl"], rel=1e-6)
    assert 0 <= metrics["active_units"] <= 4 and math.isfinite(metrics["loss"])
    val = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in val if r["kind"] == "val"] == [4, 8]
    result = vae_sample(VaeSampleConfig(model=out, n=3, interpolate=["First Citizen", "All: speak"], steps=4))
    assert len(result["prior"]) == 3 and len(result["interpolation"]) == 4
    with pytest.raises(ArtifactError):
        vae_train(tiny(packed, tmp_path / "none", resume=True))
    damaged_runs_are_artifact_errors(out, tmp_path)


def test_logged_throughput_counts_the_sentences_tokens(packed, tmp_path):
    """metrics.jsonl's `tokens` (and so tokens_per_s) is the sentences' tokens, not batch size x padded width."""
    from genforge.paradigms.vae import SentenceBatches, read_sentences
    from genforge.train.data import read_pack

    cfg = tiny(packed, tmp_path / "vae", max_len=64, max_steps=2, eval_every=2, save_every=2)
    vae_train(cfg)
    rows = read_sentences(packed, "train", read_pack(packed), cfg.max_len)
    batches = SentenceBatches(rows, cfg, {"bos": 1, "eos": 2, "pad": 0})
    real = sum(int(batches.batch(step, 0)["lengths"].sum()) for step in range(2))
    padded = sum(batches.batch(step, 0)["input_ids"].numel() for step in range(2))
    logged = [json.loads(line) for line in (cfg.out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["tokens"] for r in logged if r["kind"] == "train"] == [real] and real < padded


def test_a_rerun_on_data_without_documents_keeps_the_earlier_run(packed, no_val_documents, tmp_path):
    out = vae_train(tiny(packed, tmp_path / "vae", max_steps=4))
    finished = read_manifest(out, "vae")
    with pytest.raises(DataError, match="val.bin holds no documents"):
        vae_train(tiny(no_val_documents, out, max_steps=4))
    assert read_manifest(out, "vae") == finished


def test_a_new_run_refuses_an_unfinished_one_and_a_redo_starts_clean(packed, tmp_path):
    """A rerun without --resume silently started over in an interrupted run's folder, and a redo of a finished
    one kept the old TensorBoard events beside the new (TensorBoard drew both runs as one)."""
    out = vae_train(tiny(packed, tmp_path / "vae", max_steps=4))
    vae_train(tiny(packed, out, max_steps=4))
    assert len(list((out / "logs").glob("events.out.tfevents.*"))) == 1
    (out / "manifest.json").unlink()  # as an interrupted run leaves it
    with pytest.raises(ArtifactError, match="holds an unfinished run: add --resume to continue it"):
        vae_train(tiny(packed, out, max_steps=4))


def damaged_runs_are_artifact_errors(run, tmp_path):
    """A copy of a finished run with one file damaged at a time: each refusal names the file."""
    for damage, message in [(lambda f: (f / "vae.json").write_text("{bad"), "vae.json is corrupt"),
                            (lambda f: (f / "vae.json").write_text("{}"), "vae.json lacks the model sizes"),
                            (lambda f: (f / "model.safetensors").write_bytes(b"\0" * 100),
                             "model.safetensors is corrupt"),
                            (lambda f: shutil.rmtree(f / "tokenizer"), "tokenizer is missing")]:
        folder = tmp_path / "damaged"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(run, folder)
        damage(folder)
        with pytest.raises(ArtifactError, match=message):
            vae_sample(VaeSampleConfig(model=folder, n=1))


def test_each_sentence_prints_on_one_line(capsys):
    print_sentences({"prior": ["ROMEO:\nO, she doth\r\nteach", ""], "interpolation": ["a"]})
    assert capsys.readouterr().out.splitlines() == ["# prior", "ROMEO: O, she doth teach", "",
                                                     "# interpolation", "a"]


def test_bad_configs():
    with pytest.raises(ConfigError, match="--word-dropout"):
        VaeConfig(data="d", out="o", word_dropout=1.0).check()
    with pytest.raises(ConfigError, match="exactly two"):
        VaeSampleConfig(model="m", interpolate=["a"]).check()
    with pytest.raises(ConfigError, match=f"--n must be at most {MAX_SAMPLES}, got 100000000"):
        VaeSampleConfig(model="m", n=100_000_000).check()
    with pytest.raises(ConfigError, match=f"--steps must be at most {MAX_SAMPLES}"):
        VaeSampleConfig(model="m", steps=MAX_SAMPLES + 1).check()


def test_absurd_sizes_are_one_line_errors_before_the_output_is_touched(packed, tmp_path):
    """`vae train --hidden-size 100000000000` ended in an allocator's "internal error"; the model is now counted
    on the meta device and refused, like one whose training state exceeds the free memory."""
    import subprocess
    import sys

    out = tmp_path / "vae"
    result = subprocess.run([sys.executable, "-m", "genforge.cli", "vae", "train", "--data", str(packed), "--out",
                             str(out), "--hidden-size", "100000000000"], capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: --embed-size 256 --hidden-size 100000000000 --latent-size 32: a model too "
                                    "large to build (")
    with pytest.raises(ConfigError, match=r"^--embed-size 16 --hidden-size 10000000 --latent-size 4: a model of "
                                          r"[\d,]+ parameters, whose training needs ~[\d,.]+ GiB .*; choose smaller sizes$"):
        vae_train(tiny(packed, out, hidden_size=10**7))
    assert not out.exists()


def test_a_tiny_temperature_decodes_like_greedy():
    """1e-39 is a valid temperature: the top logit divided by it overflowed to inf and the softmax to NaN,
    so multinomial failed with a traceback."""
    from genforge.paradigms.vae_sample import decode

    torch.manual_seed(0)
    model = TextVae(20, 8, 8, 4).eval()
    z, special = torch.randn(3, 4), {"bos": 1, "eos": 2, "pad": 0}
    with torch.no_grad():
        assert decode(model, z, special, 6, temperature=1e-39) == decode(model, z, special, 6)
