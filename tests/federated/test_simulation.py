"""End-to-end on Flower's simulation (Ray): real silos, one of them broken, LoRA, FedProx, export."""

import json

import pytest

from genforge.artifacts import read_manifest
from genforge.errors import ConfigError
from genforge.federated.config import FederatedClassifyConfig
from genforge.federated.run import federated
from genforge.finetune.classifier import load_classifier, predict_probs


def test_federated_lora_classifier_survives_a_broken_silo(tmp_path, bert_dir, sentiment_rows, csv_file):
    files = [csv_file(f"branch{k}.csv", sentiment_rows[k::3]) for k in range(3)]
    val = csv_file("val.csv", sentiment_rows[::5])
    cfg = FederatedClassifyConfig(model=bert_dir, val_data=val, out=tmp_path / "fed", clients=3,
                                  partition="by-file", client_data=files, rounds=2, local_steps=3, batch_size=8,
                                  seq_len=32, lr=3e-3, bf16=False, strategy="fedprox", mu=0.1, lora_r=4,
                                  min_fit_clients=2)
    files[2].write_text("text,label\n", encoding="utf-8")  # branch 2's data is gone: its client fails each round
    out = federated(cfg, "classify")

    lines = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in lines] == [0, 1, 2]
    for r in lines[1:]:
        assert r["sampled"] == 3 and r["failed"] == 1 and r["used"] == 2
        assert sorted(c["partition_id"] for c in r["clients"]) == [0, 1]
        assert 0 <= r["val_accuracy"] <= 1 and r["bytes"] > 0
    manifest = read_manifest(out, "finetune")
    fed = manifest["federated"]
    assert [c["data_sha256"] for c in fed["clients"]] and fed["strategy"] == "fedprox"
    assert all("text" not in json.dumps(c) for c in fed["clients"])  # hashes and sizes, never the data
    assert manifest["metrics"]["failed_replies"] == 2
    # LoRA: only the adapters and the head travel, far fewer bytes than the model
    per_client = lines[1]["clients"][0]["bytes_up"]
    assert per_client < (bert_dir / "model.safetensors").stat().st_size / 4
    assert (out / "logs" / "rounds.png").is_file() and (out / "logs" / "partition.png").is_file()
    model, tokenizer, info = load_classifier(out)
    probs = predict_probs(model, tokenizer, ["profits rose sharply"], seq_len=32, multi_label=False)
    assert info["labels"] == ["negative", "positive"] and probs.shape == (1, 2)


def test_bad_federated_settings_are_one_line_errors(tmp_path, sentiment_csv, bert_dir):
    base = {"model": bert_dir, "data": sentiment_csv, "out": tmp_path / "o"}
    with pytest.raises(ConfigError, match="by-file needs one --client-data per client"):
        FederatedClassifyConfig(**base, partition="by-file", clients=2).check()
    with pytest.raises(ConfigError, match="give the data to split into silos: --data"):
        FederatedClassifyConfig(**{**base, "data": None}, partition="iid").check()
    with pytest.raises(ConfigError, match="--dp-noise is accounted"):
        FederatedClassifyConfig(**base, strategy="median", dp_noise=1.0).check()
    with pytest.raises(ConfigError, match="fraction-fit"):
        FederatedClassifyConfig(**base, fraction_fit=0).check()
    with pytest.raises(ConfigError, match="--local-epochs must be >= 0"):
        FederatedClassifyConfig(**base, local_epochs=-1).check()
    with pytest.raises(ConfigError, match="--server-tau"):
        FederatedClassifyConfig(**base, server_tau=0).check()


def test_federated_pretraining_with_a_robust_median_exports_an_lm(tmp_path, packed):
    from transformers import AutoModelForCausalLM

    from genforge.federated.config import FederatedPretrainConfig

    cfg = FederatedPretrainConfig(data=packed, out=tmp_path / "lm", preset="tiny", batch_size=4, seq_len=32,
                                  bf16=False, clients=3, rounds=2, local_steps=3, lr=3e-3, partition="quantity",
                                  alpha=1.0, strategy="median", eval_batches=2)
    out = federated(cfg, "pretrain")
    manifest = read_manifest(out, "pretrain")
    assert manifest["federated"]["strategy"] == "median" and len(manifest["federated"]["clients"]) == 3
    rows = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    assert AutoModelForCausalLM.from_pretrained(out).config.vocab_size == 320
