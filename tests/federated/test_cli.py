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
    result = CliRunner().invoke(app, ["federated", "classify", "--model", str(bert_dir), "--data", str(sentiment_csv),
                                      "--out", str(tmp_path / "o"), "--clients", "2", "--secagg"])
    assert result.exit_code == 2 and "--secagg needs at least 3 clients sampled per round" in result.output


def test_real_silos_from_the_command_line_need_no_data_flag(tmp_path, bert_dir, sentiment_rows, csv_file, packed):
    """The documented by-file usage: one --client-data per client and no --data, for classify and pretrain."""
    silos = [str(csv_file(f"branch{k}.csv", sentiment_rows[k::2])) for k in range(2)]
    result = CliRunner().invoke(app, ["federated", "classify", "--model", str(bert_dir), "--partition", "by-file",
                                      "--clients", "2", "--client-data", silos[0], "--client-data", silos[1],
                                      "--val-data", str(csv_file("val.csv", sentiment_rows[::5])), "--out",
                                      str(tmp_path / "fed"), "--rounds", "1", "--local-steps", "1", "--seq-len", "32",
                                      "--batch-size", "4", "--no-bf16"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "fed", "finetune")
    assert [c["data"] for c in manifest["federated"]["clients"]] == silos and manifest["config"]["data"] is None
    result = CliRunner().invoke(app, ["federated", "pretrain", "--partition", "by-file", "--clients", "2",
                                      "--client-data", str(packed), "--client-data", str(packed), "--preset", "tiny",
                                      "--out", str(tmp_path / "lm"), "--rounds", "1", "--local-steps", "1",
                                      "--seq-len", "32", "--batch-size", "4", "--eval-batches", "1", "--no-bf16"])
    assert result.exit_code == 0, result.output
    assert len(read_manifest(tmp_path / "lm", "pretrain")["federated"]["clients"]) == 2
