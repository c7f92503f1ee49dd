import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from genforge.artifacts import read_manifest
from genforge.config import load_config
from genforge.errors import ArtifactError, ConfigError, DataError
from genforge.train.config import EvalConfig, PretrainConfig
from genforge.train.evaluate import evaluate
from genforge.train.pretrain import pretrain

TINY_FLAGS = ["--preset", "tiny", "--seq-len", "32", "--batch-size", "4", "--warmup-steps", "2",
              "--eval-every", "2", "--eval-batches", "2", "--log-every", "1", "--no-bf16"]


def cli(*args, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "genforge.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, **kw)


@pytest.mark.e2e
def test_cli_pretrain_gives_an_hf_folder_and_eval_prints_json(tmp_path, packed):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path / "run"
    done = cli("pretrain", "--data", packed, "--out", run, "--max-steps", "4", *TINY_FLAGS)
    assert done.returncode == 0, done.stderr[-2000:]
    model = AutoModelForCausalLM.from_pretrained(run)
    tokenizer = AutoTokenizer.from_pretrained(run)
    assert model.config.vocab_size == len(tokenizer) == 320
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id == 2
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id == 0
    out = model.generate(**tokenizer("ROMEO:", return_tensors="pt"), max_new_tokens=5, min_new_tokens=5)
    assert out.shape[1] == len(tokenizer("ROMEO:")["input_ids"]) + 5

    manifest = read_manifest(run, "pretrain")
    assert manifest["parent"]["stage"] == "data.pack"
    assert [p["path"].rsplit("/", 1)[-1] for p in manifest["inputs"]] == ["train.bin", "val.bin"]
    assert manifest["metrics"]["steps"] == 4 and manifest["metrics"]["val_bits_per_byte"] > 0
    for path in ("README.md", "logs/loss.png", "logs/metrics.jsonl", "checkpoints/latest/trainer_state.pt",
                 "checkpoints/best/model.safetensors"):
        assert (run / path).is_file(), path
    assert list((run / "logs").glob("events.out.tfevents.*"))
    card = (run / "README.md").read_text()
    assert "library_name: transformers" in card and "![loss curve](logs/loss.png)" in card
    assert "| 1 | data.pack |" in card

    scored = cli("eval", "--model", run, "--data", packed, "--seq-len", "32")
    assert scored.returncode == 0, scored.stderr[-2000:]
    result = json.loads(scored.stdout.strip().splitlines()[-1])
    assert set(result) == {"loss", "perplexity", "bits_per_byte"}
    assert result["loss"] == pytest.approx(manifest["metrics"]["val_loss"], rel=0.2)


def test_mlm_end_to_end(tmp_path, packed, tiny):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    run = pretrain(tiny(tmp_path / "mlm", objective="mlm", max_steps=3))
    model = AutoModelForMaskedLM.from_pretrained(run)
    tokenizer = AutoTokenizer.from_pretrained(run)
    inputs = tokenizer(f"To be or not to {tokenizer.mask_token}", return_tensors="pt")
    assert model(**inputs).logits.shape[-1] == 320
    # truncation=True cuts at the model's positions (--seq-len 32), not the tokenizer's default 2048:
    # a longer text would index past BERT's position table
    assert tokenizer.model_max_length == model.config.max_position_embeddings == 32
    long = tokenizer(" ".join(["To be or not to be"] * 40), truncation=True, return_tensors="pt")
    assert long["input_ids"].shape[1] == 32 and model(**long).logits.shape[1] == 32
    manifest = read_manifest(run, "pretrain")
    assert manifest["objective"] == "mlm" and manifest["model"]["architecture"] == "BertForMaskedLM"
    assert "fill-mask" in (run / "README.md").read_text()
    scored = evaluate(EvalConfig(model=run, data=packed, seq_len=32, batch_size=8))  # mlm found from config.json
    assert scored["loss"] == pytest.approx(manifest["metrics"]["val_loss"], rel=0.05)


def test_continued_pretraining_from_a_local_hf_folder(tmp_path, packed, tiny):
    base = pretrain(tiny(tmp_path / "base", max_steps=2))
    before = load_file(base / "model.safetensors")
    run = pretrain(tiny(tmp_path / "more", model=base, max_steps=2, preset="small"))
    after = load_file(run / "model.safetensors")
    assert before.keys() == after.keys()  # the base architecture, not the (ignored) preset
    assert not torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    manifest = read_manifest(run, "pretrain")
    assert manifest["model"]["base_model"]["stage"] == "pretrain"
    with pytest.raises(ArtifactError, match="causal LM.*--objective mlm"):
        pretrain(tiny(tmp_path / "wrong", model=base, objective="mlm"))


def test_extending_a_finished_run_and_redoing_it(tmp_path, packed, tiny):
    cfg = tiny(tmp_path / "run", max_steps=3)
    pretrain(cfg)
    pretrain(replace(cfg, max_steps=5, resume=True))
    rows = [json.loads(x) for x in (cfg.out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4, 5]
    assert read_manifest(cfg.out)["metrics"]["steps"] == 5
    pretrain(cfg)  # a finished run is redone from scratch
    assert read_manifest(cfg.out)["metrics"]["steps"] == 3


@pytest.mark.e2e
def test_ctrl_c_saves_and_says_how_to_resume(tmp_path, packed):
    run = tmp_path / "run"
    args = ["pretrain", "--data", packed, "--out", run, "--max-steps", "100000", "--save-every", "0", *TINY_FLAGS]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "genforge.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    metrics = run / "logs" / "metrics.jsonl"
    while proc.poll() is None and not (metrics.is_file() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]  # 128 + SIGINT, as a shell expects: a stop, not an error
    assert "SIGINT" in err and "--resume" in err and "Traceback" not in err and "error:" not in err
    assert not (run / "manifest.json").exists(), "an interrupted run must not look finished"
    with pytest.raises(ArtifactError, match="unfinished run"):
        pretrain(load_config(PretrainConfig, None, {"data": packed, "out": run, "preset": "tiny"}))
    step = torch.load(run / "checkpoints" / "latest" / "trainer_state.pt", weights_only=True)["step"]
    resumed = cli("pretrain", "--data", packed, "--out", run, "--max-steps", step + 2, "--resume", *TINY_FLAGS)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert read_manifest(run)["metrics"]["steps"] == step + 2


@pytest.mark.parametrize("overrides, error, match", [
    ({"batch_size": 0}, ConfigError, "--batch-size must be positive"),
    ({"min_lr": 0.1}, ConfigError, "--min-lr 0.1 is larger than --lr"),
    ({"preset": "huge"}, ConfigError, "must be one of tiny, small, base, custom"),
    ({"hidden_size": 96}, ConfigError, "--hidden-size is for --preset custom"),
    ({"preset": "custom"}, ConfigError, "--preset custom needs"),
    ({"preset": "custom", "hidden_size": 100, "num_heads": 3}, ConfigError, "not divisible by 3 heads"),
    ({"seq_len": 5000, "model": "MODEL"}, ConfigError, "--seq-len 5000 is longer than the model's 32 positions"),
    ({"data": "NODATA"}, ArtifactError, "has no pack.json"),
    ({"model": "NOMODEL"}, ArtifactError, "is not a folder"),
    ({"resume": True}, ArtifactError, "nothing to resume"),
])
def test_bad_input_is_a_one_line_error(tmp_path, packed, tiny, overrides, error, match):
    (tmp_path / "NODATA").mkdir()
    values = {"data": packed, "out": tmp_path / "out", "preset": "tiny", "max_steps": 1, "seq_len": 32}
    if overrides.get("model") == "MODEL":
        overrides["model"] = pretrain(tiny(tmp_path / "model", max_steps=1))
    values.update({k: tmp_path / v if v in ("NODATA", "NOMODEL") else v for k, v in overrides.items()})
    with pytest.raises(error, match=match) as info:
        pretrain(load_config(PretrainConfig, None, values))
    assert "\n" not in str(info.value)


def test_data_without_tokens_or_a_foreign_model_folder(tmp_path, packed, tiny):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    with pytest.raises(ArtifactError, match="has no weights"):
        pretrain(tiny(tmp_path / "out", model=tmp_path / "hf"))
    with pytest.raises(DataError, match="fewer than one window"):
        pretrain(tiny(tmp_path / "out2", seq_len=100_000))
    bad = cli("pretrain", "--data", tmp_path, "--out", tmp_path / "o")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "pack.json" in bad.stderr


@pytest.fixture(scope="module")
def other_tokenizer_data(packed, tmp_path_factory):
    """The text of `packed`, packed by another (larger) tokenizer."""
    import shutil

    from genforge.data.config import PackConfig, TokenizerConfig
    from genforge.data.pack import pack
    from genforge.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("other")
    data = root / "data"
    shutil.copytree(packed, data)
    tok = train_tokenizer(TokenizerConfig(data=data, out=root / "tok", vocab_size=400))
    pack(PackConfig(data=data, tokenizer=tok, workers=1))
    return data


def test_resume_checks_the_data_and_checkpoint_before_touching_a_finished_run(tmp_path, tiny, other_tokenizer_data):
    cfg = tiny(tmp_path / "run", max_steps=3)
    pretrain(cfg)
    finished = read_manifest(cfg.out, "pretrain")
    with pytest.raises(DataError, match="was trained on data of another tokenizer"):
        pretrain(replace(cfg, data=other_tokenizer_data, max_steps=5, resume=True))
    latest = cfg.out / "checkpoints" / "latest" / "model.safetensors"
    good = latest.read_bytes()
    latest.write_bytes(good[:1000])
    with pytest.raises(ArtifactError, match="latest/model.safetensors is corrupt"):
        pretrain(replace(cfg, max_steps=5, resume=True))
    latest.write_bytes(good)
    assert read_manifest(cfg.out, "pretrain") == finished


def test_resuming_an_interrupted_run_checks_the_tokenizer_it_started_with(tmp_path, tiny, other_tokenizer_data,
                                                                         monkeypatch):
    from genforge.train import pretrain as pretrain_module

    real_train = pretrain_module.train

    def interrupted(*args, **kwargs):  # a run killed after its last checkpoint, before its export
        real_train(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain_module, "train", interrupted)
    cfg = tiny(tmp_path / "run", max_steps=3)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg)
    monkeypatch.undo()
    with pytest.raises(DataError, match="was trained on data of another tokenizer"):
        pretrain(replace(cfg, data=other_tokenizer_data, max_steps=5, resume=True))
    assert read_manifest(pretrain(replace(cfg, max_steps=5, resume=True)))["metrics"]["steps"] == 5


def test_resume_refuses_model_flags_other_than_the_checkpoints(tmp_path, tiny):
    """A resumed model is rebuilt from its checkpoint, so other model flags would be silently ignored; what is
    no part of the model (steps, lr schedule, evaluation) may change, and flags at their defaults take the run's."""
    import re

    cfg = tiny(tmp_path / "run", max_steps=3)
    pretrain(cfg)
    finished = read_manifest(cfg.out, "pretrain")
    resume = replace(cfg, max_steps=5, resume=True)
    for changes, differs in [
        ({"preset": "custom", "hidden_size": 128, "num_layers": 4, "num_heads": 4},
         "num_hidden_layers 4 (from --preset custom --hidden-size 128 --num-layers 4 --num-heads 4) differs from "
         "the checkpoint's 2"),
        ({"preset": "base"}, "hidden_size 576 (from --preset base) differs from the checkpoint's 128"),
        ({"dropout": 0.1}, "attention_dropout 0.1 (from --dropout 0.1) differs from the checkpoint's 0.0"),
    ]:
        message = f"--resume: {differs}; resume with the run's own sizes or write to a new --out"
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            pretrain(replace(resume, **changes))
    assert read_manifest(cfg.out, "pretrain") == finished
    done = pretrain(replace(resume, preset="small", lr=5e-4, warmup_steps=1, eval_every=5))
    assert read_manifest(done)["metrics"]["steps"] == 5


@pytest.mark.parametrize("sizes, what", [
    ({"num_layers": 10**9}, r"--num-layers 1000000000: a model of [\d,]+ parameters, whose training needs"),
    ({"hidden_size": 10**11, "num_heads": 1}, r"--hidden-size 100000000000 --num-heads 1: a model too large to build"),
])
def test_absurd_sizes_are_refused_before_anything_is_allocated(tmp_path, tiny, sizes, what):
    with pytest.raises(ConfigError, match=rf"^--preset custom {what}.*; choose smaller sizes$"):
        pretrain(tiny(tmp_path / "out", preset="custom", **sizes))
    assert not (tmp_path / "out").exists()


def test_a_kill_between_the_checkpoint_renames_is_resumed_not_restarted(tmp_path, tiny):
    """save_checkpoint moves the old checkpoint aside, then renames the new one in: a kill between the two
    leaves only `.latest.old-PID`. That run is unfinished and resumable, not a folder to start afresh in."""
    cfg = tiny(tmp_path / "run", max_steps=3)
    pretrain(cfg)
    (cfg.out / "manifest.json").unlink()  # killed before its export: no manifest
    latest = cfg.out / "checkpoints" / "latest"
    latest.rename(latest.with_name(".latest.old-12345"))
    with pytest.raises(ArtifactError, match="holds an unfinished run: add --resume"):
        pretrain(replace(cfg, max_steps=5))
    assert read_manifest(pretrain(replace(cfg, max_steps=5, resume=True)))["metrics"]["steps"] == 5
