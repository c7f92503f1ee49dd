"""The oracle metric against a hand computation of SeqGAN's LSTM equations, and the benchmark run end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from genforge.errors import ArtifactError, ConfigError, DataError
from genforge.paradigms.config import OracleConfig
from genforge.paradigms.gan_oracle import gan_oracle
from genforge.paradigms.oracle import load_oracle, random_oracle, read_samples
from genforge.paradigms.sequence import mean_nll


def hand_nll(p, seq) -> float:
    """Mean NLL per token of one sequence, straight from the README's equations in numpy (float64)."""
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h = c = np.zeros(p["Wi"].shape[1])
    x, total = p["g_embeddings"][0], 0.0  # start token id 0
    for token in seq:
        i = sig(x @ p["Wi"] + h @ p["Ui"] + p["bi"])
        f = sig(x @ p["Wf"] + h @ p["Uf"] + p["bf"])
        o = sig(x @ p["Wog"] + h @ p["Uog"] + p["bog"])
        c = f * c + i * np.tanh(x @ p["Wc"] + h @ p["Uc"] + p["bc"])
        h = o * np.tanh(c)
        logits = h @ p["Wo"] + p["bo"]
        log_z = logits.max() + np.log(np.exp(logits - logits.max()).sum())
        total += log_z - logits[token]
        x = p["g_embeddings"][token]
    return total / len(seq)


def test_published_oracle_matches_the_equations(shared_data):
    folder = shared_data / "seqgan_oracle"
    p = {k: v.astype(np.float64) for k, v in np.load(folder / "oracle_params.npz").items()}
    rows = read_samples(folder / "real_data.txt", 5000, 20)[:3]
    expected = np.mean([hand_nll(p, r.tolist()) for r in rows])
    assert mean_nll(load_oracle(folder), rows, 0) == pytest.approx(expected, abs=1e-4)


def test_oracle_scores_its_own_samples_near_the_published_floor(shared_data):
    folder = shared_data / "seqgan_oracle"
    rows = read_samples(folder / "real_data.txt", 5000, 20)[:300]
    assert 5.4 < mean_nll(load_oracle(folder), rows, 0) < 6.1  # README: about 5.75 per token
    uniform = torch.randint(0, 5000, (300, 20), generator=torch.Generator().manual_seed(0))
    assert mean_nll(load_oracle(folder), uniform, 0) > 10.5  # README: a uniform generator about 11.4


def test_bad_oracle_inputs(tmp_path):
    with pytest.raises(DataError, match="oracle_params.npz not found"):
        load_oracle(tmp_path)
    (tmp_path / "real.txt").write_text("1 2 3\n")
    with pytest.raises(DataError, match="line 1: expected 20 ids"):
        read_samples(tmp_path / "real.txt", 5000, 20)
    (tmp_path / "real.txt").write_text("\n")
    with pytest.raises(DataError, match="holds no sequences"):
        read_samples(tmp_path / "real.txt", 5000, 20)
    (tmp_path / "real.txt").write_text("\n" + "1 " * 20 + "\n\n1 2 3\n")  # blank lines count as lines
    with pytest.raises(DataError, match="line 4: expected 20 ids"):
        read_samples(tmp_path / "real.txt", 5000, 20)


def test_damaged_oracle_parameters_are_data_errors(tmp_path, shared_data):
    path = tmp_path / "oracle_params.npz"
    path.write_bytes((shared_data / "seqgan_oracle" / "oracle_params.npz").read_bytes()[:500])
    with pytest.raises(DataError, match="not a readable .npz"):
        load_oracle(tmp_path)
    names = ["g_embeddings", "Wo", "bo", "Wi", "Ui", "bi", "Wf", "Uf", "bf", "Wc", "Uc", "bc", "Wog", "Uog", "bog"]
    np.savez(path, **{k: np.array([object()], dtype=object) for k in names})  # pickles: refused, not loaded
    with pytest.raises(DataError, match="not a readable .npz"):
        load_oracle(tmp_path)
    np.savez(path, **{k: np.zeros(3) for k in names})
    with pytest.raises(DataError, match="must be matrices"):
        load_oracle(tmp_path)
    arrays = {k: np.zeros((2,) if k.startswith("b") else (2, 2)) for k in names}
    np.savez(path, **{**arrays, "Wo": np.zeros((2, 7)), "bo": np.zeros(7), "g_embeddings": np.zeros((7, 2)),
                      "Uc": np.zeros((2, 3))})
    with pytest.raises(DataError, match="'Uc' has shape \\(2, 3\\), expected \\(2, 2\\)"):
        load_oracle(tmp_path)
    np.savez(path, **{**arrays, "Wo": np.zeros((2, 7)), "bo": np.zeros(7), "g_embeddings": np.zeros((7, 2))})
    assert load_oracle(tmp_path).head.out_features == 7


def test_empty_real_data_leaves_the_output_alone(tmp_path, shared_data):
    (tmp_path / "oracle").mkdir()
    (tmp_path / "oracle" / "oracle_params.npz").write_bytes(
        (shared_data / "seqgan_oracle" / "oracle_params.npz").read_bytes())
    (tmp_path / "oracle" / "real_data.txt").write_text("")
    with pytest.raises(DataError, match="holds no sequences"):
        gan_oracle(OracleConfig(oracle=tmp_path / "oracle", out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_random_oracle_is_seeded():
    a, b = random_oracle(3, vocab=50, size=8), random_oracle(3, vocab=50, size=8)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert a.embed.weight.std() > 0.5  # N(0, 1), as SeqGAN's original code


def tiny(out, **over) -> OracleConfig:
    cfg = dict(out=out, train_size=128, test_size=32, mle_steps=10, disc_pretrain_steps=1, adv_epochs=2,
               eval_every=1, eval_samples=16, rollouts=2, batch_size=8)
    return OracleConfig(**{**cfg, **over})


def test_gan_oracle_runs_and_resumes(tmp_path):
    out = tmp_path / "run"
    results = gan_oracle(tiny(out))
    rows = results["rows"]
    assert {"random", "mle", "seqgan", "gumbel"} <= set(rows) and any(k.startswith("mle (T=") for k in rows)
    assert rows["mle"]["nll_test"] < rows["random"]["nll_test"]  # a dozen MLE steps already learn something
    best = results["gans"]["gumbel"]["best"]  # chosen by quality + diversity on validation samples
    assert best["nll_sum"] == pytest.approx(best["nll_oracle"] + best["nll_test"])
    if results["mle"]["best_step"] != results["mle"]["steps"]:
        assert "mle (last step)" in rows
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "gan.oracle" and manifest["metrics"]["mle"]["nll_oracle"] > 0
    assert (out / "nll_oracle.png").is_file() and (out / "seqgan" / "samples.txt").is_file()
    # resume: two more adversarial epochs continue the saved ones, logs read like one run
    gan_oracle(tiny(out, resume=True, adv_epochs=4, variant=["gumbel"]))
    log = [json.loads(line) for line in (out / "gumbel" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2, 3, 4]
    state = json.loads((out / "gumbel" / "checkpoints" / "latest" / "checkpoint.json").read_text())
    assert state["epoch"] == 4


def test_cli_bad_input_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "genforge.cli", "gan", "oracle", "--out", str(tmp_path / "o"),
                             "--oracle", str(tmp_path / "missing")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="--rollouts must be positive"):
        OracleConfig(out=tmp_path, rollouts=0).check()


def test_absurd_generator_sizes_are_refused_before_the_output_is_touched(tmp_path):
    with pytest.raises(ConfigError, match=r"^--embed-size 32 --hidden-size 10000000: a model of [\d,]+ parameters"):
        gan_oracle(tiny(tmp_path / "o", hidden_size=10**7))
    assert not (tmp_path / "o").exists()


def test_resume_without_a_run_is_refused_before_any_work(tmp_path):
    with pytest.raises(ArtifactError, match="nothing to resume: .*mle/checkpoints/latest does not exist; drop --resume"):
        gan_oracle(tiny(tmp_path / "o", resume=True))
    assert not (tmp_path / "o").exists()
