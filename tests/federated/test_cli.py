"""`genforge federated --recipe` (a centralized SFT recipe plus a `federated:` section) and CLI errors."""

import json

import yaml
from typer.testing import CliRunner

from genforge.artifacts import read_manifest
from genforge.cli import app


def test_a_recipe_turns_centralized_sft_federated(tmp_path, llama_dir, dialogues):
    recipe = {"task": "sft", "model": str(llama_dir), "data": str(dialogues), "out": str(tmp_path / "chat"),
              "batch_size": 4, "seq_len": 64, "lr": 1e-2, "bf16": False, "lora_r": 4,
              "federated": {"clients": 2, "rounds": 2, "local_steps": 2, "partition": "quantity", "alpha": 1.0}}
    path = tmp_path / "fed.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    result = CliRunner().invoke(app, ["federated", "--recipe", str(path)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "chat"
    manifest = read_manifest(out, "finetune")
    assert manifest["task"] == "sft" and manifest["config"]["partition"] == "quantity"
    assert (out / "adapter_model.safetensors").is_file()  # LoRA: the run folder is the adapter, as centralized
    rows = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert rows[-1]["round"] == 2 and rows[-1]["val_loss"] < rows[0]["val_loss"]


def test_bad_input_is_one_line_and_exit_2(tmp_path, sentiment_csv, bert_dir):
    result = CliRunner().invoke(app, ["federated", "classify", "--model", str(bert_dir), "--data",
                                      str(sentiment_csv), "--out", str(tmp_path / "o"), "--partition", "by-file"])
    assert result.exit_code == 2 and "error: --partition by-file needs one --client-data" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: translate\n")
    result = CliRunner().invoke(app, ["federated", "--recipe", str(bad)])
    assert result.exit_code == 2 and "needs `task: classify|sft|pretrain`" in result.output
