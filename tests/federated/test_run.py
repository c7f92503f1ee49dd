"""The federated launcher reads its inputs before it touches --out: a rerun on bad data keeps a finished run."""

import pytest

from genforge.artifacts import read_manifest, write_manifest
from genforge.errors import GenforgeError
from genforge.federated.config import FederatedClassifyConfig, FederatedPretrainConfig
from genforge.federated.run import federated


@pytest.fixture
def finished(tmp_path):
    """A folder holding a finished federated run (its manifest written by hand: a real run needs Ray)."""
    out = tmp_path / "fed"
    out.mkdir()
    write_manifest(out, "finetune", None, metrics={"val_accuracy": 0.9})
    return out


def test_a_rerun_on_an_empty_data_file_keeps_the_finished_run(finished, bert_dir, csv_file):
    before = read_manifest(finished)
    cfg = FederatedClassifyConfig(model=bert_dir, data=csv_file("empty.csv", []), out=finished, clients=2,
                                  rounds=1, local_steps=1, batch_size=8, seq_len=32, bf16=False)
    with pytest.raises(GenforgeError, match="empty.csv holds no examples"):
        federated(cfg, "classify")
    assert read_manifest(finished) == before


def test_a_rerun_on_a_folder_that_is_not_packed_keeps_the_finished_run(finished, tmp_path):
    write_manifest(finished, "pretrain", None, metrics={"val_loss": 3.0})  # a finished federated pretraining
    before = read_manifest(finished)
    (tmp_path / "unpacked").mkdir()
    cfg = FederatedPretrainConfig(data=tmp_path / "unpacked", out=finished, preset="tiny", batch_size=4, seq_len=32,
                                  bf16=False, clients=2, rounds=1, local_steps=1)
    with pytest.raises(GenforgeError, match="unpacked has no pack.json"):
        federated(cfg, "pretrain")
    assert read_manifest(finished) == before


def write_federation(tmp_path, kind, cfg):
    """federation.json as the launcher writes it (its `silos` sizes), without starting Flower; (path, clients)."""
    from genforge.artifacts import write_json
    from genforge.config import to_dict
    from genforge.federated.run import silos
    from genforge.federated.tasks import build_task

    task = build_task(kind, cfg)
    clients, _ = silos(kind, cfg, task)
    path = tmp_path / "federation.json"
    write_json(path, {"task": kind, "config": to_dict(cfg), "labels": task.label_set, "clients": clients,
                      "work_dir": str(tmp_path / "clients")})
    return path, clients


@pytest.mark.parametrize("kind, variant", [("sft", "plain"), ("sft", "packed"), ("pretrain", "clm"),
                                           ("pretrain", "mlm"), ("classify", "hash-split")])
def test_the_launcher_records_the_sizes_real_silos_report(tmp_path, kind, variant, llama_dir, dialogues, bert_dir,
                                                          sentiment_rows, csv_file, packed, pack_shakespeare):
    """SecAgg+ scales each update by its client's size over the largest recorded one (max_weight): a client
    larger than that (an unknown size, once recorded as None for by-file SFT and pretraining) is clipped and
    wraps the modular sum. So the sizes the launcher records are the ones the clients report (`len(silo.rows)`)."""
    from genforge.federated.client import silo
    from genforge.federated.config import FederatedSftConfig

    common = {"out": tmp_path / "o", "clients": 2, "partition": "by-file", "bf16": False, "rounds": 1,
              "local_steps": 1, "batch_size": 4}
    if kind == "sft":
        lines = dialogues.read_text().splitlines(keepends=True)
        files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
        files[0].write_text("".join(lines[:25]))
        files[1].write_text("".join(lines[25:]))
        cfg = FederatedSftConfig(model=llama_dir, client_data=files, seq_len=64, pack=variant == "packed", **common)
    elif kind == "pretrain":
        cfg = FederatedPretrainConfig(client_data=[packed, pack_shakespeare(30_000)], preset="tiny", seq_len=32,
                                      objective=variant, **common)
    else:
        cfg = FederatedClassifyConfig(model=bert_dir, client_data=[csv_file(f"c{k}.csv", sentiment_rows[k::3])
                                                                  for k in range(2)], seq_len=32, **common)
    path, clients = write_federation(tmp_path, kind, cfg)
    reported = [len(silo(str(path), k, "").rows) for k in range(2)]
    assert [c["examples"] for c in clients] == reported
    assert reported[0] != reported[1]  # distinct sizes: a max_weight of the wrong silo would show


def test_secagg_refuses_a_silo_whose_size_is_unknown(finished, bert_dir, csv_file, sentiment_rows):
    """Without a client's size SecAgg+ has no max_weight: one line, before --out is touched."""
    before = read_manifest(finished)
    silos = [csv_file("good.csv", sentiment_rows), csv_file("empty.csv", []), csv_file("good.csv", sentiment_rows)]
    cfg = FederatedClassifyConfig(model=bert_dir, out=finished, clients=3, partition="by-file", rounds=1,
                                  client_data=silos,
                                  val_data=csv_file("val.csv", sentiment_rows[::5]), local_steps=1, batch_size=8,
                                  seq_len=32, bf16=False, secagg=True)
    with pytest.raises(GenforgeError, match="--secagg weights each update by its client's size, and client 1's is "
                                            "unknown: .*empty.csv holds no examples"):
        federated(cfg, "classify")
    assert read_manifest(finished) == before
