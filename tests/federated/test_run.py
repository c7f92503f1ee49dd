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


def by_file_cfg(tmp_path, bert_dir, files, val, **kw):
    return FederatedClassifyConfig(model=bert_dir, partition="by-file", clients=len(files), client_data=files,
                                   val_data=val, out=tmp_path / "o", rounds=1, local_steps=1, batch_size=8,
                                   seq_len=32, bf16=False, **kw)


def test_a_client_data_path_that_does_not_exist_stops_a_simulation_in_one_line(tmp_path, bert_dir, csv_file,
                                                                                sentiment_rows):
    """The simulated clients read exactly these paths: a typo used to print a warning, then every round's client
    traceback, and end with exit 0 and a model trained without that silo. In deployment the silos live on the
    SuperNodes, so there it stays a warning."""
    from genforge.errors import ConfigError
    from genforge.federated.run import silos
    from genforge.federated.tasks import build_task

    files = [csv_file("north.csv", sentiment_rows), tmp_path / "suoth.csv"]
    cfg = by_file_cfg(tmp_path, bert_dir, files, csv_file("val.csv", sentiment_rows[::5]))
    task = build_task("classify", cfg)
    with pytest.raises(ConfigError, match=r"--client-data of client 1: .*suoth.csv does not exist"):
        silos("classify", cfg, task)
    deployed = by_file_cfg(tmp_path, bert_dir, files, cfg.val_data, engine="deployment")
    clients, _ = silos("classify", deployed, task)
    assert clients[1]["examples"] is None and clients[0]["examples"] == len(sentiment_rows)


def test_a_silo_with_labels_the_validation_data_lacks_is_refused_before_any_round(tmp_path, bert_dir, csv_file,
                                                                                  sentiment_rows):
    """--val-data fixes the head's labels; a silo with another label made its client fail every round (a run of
    tracebacks ending in 'no round aggregated a client update')."""
    from genforge.errors import ConfigError
    from genforge.federated.run import silos
    from genforge.federated.tasks import build_task

    files = [csv_file("a.csv", sentiment_rows), csv_file("b.csv", sentiment_rows + [("flat quarter", "neutral")])]
    cfg = by_file_cfg(tmp_path, bert_dir, files, csv_file("val.csv", sentiment_rows[::5]))
    with pytest.raises(ConfigError, match=r"client 1's data .*b.csv holds labels that --val-data .*val.csv lacks: "
                                          r"\['neutral'\]"):
        silos("classify", cfg, build_task("classify", cfg))


def test_settings_no_simulation_could_run_are_refused(tmp_path, sentiment_csv, bert_dir):
    """Both used to start Ray: more --min-fit-clients than are sampled skipped every round; --client-cpus above
    --total-cpus crashed Flower's simulation with a traceback and hung."""
    from genforge.errors import ConfigError

    base = {"model": bert_dir, "data": sentiment_csv, "out": tmp_path / "o", "clients": 4}
    with pytest.raises(ConfigError, match=r"--min-fit-clients must be in \[0, 2\] \(the clients sampled per round"):
        FederatedClassifyConfig(**base, fraction_fit=0.5, min_fit_clients=3).check()
    FederatedClassifyConfig(**base, fraction_fit=0.5, min_fit_clients=2).check()
    with pytest.raises(ConfigError, match="--client-cpus 3 is more than --total-cpus 2: no client would fit"):
        FederatedClassifyConfig(**base, client_cpus=3, total_cpus=2).check()
    FederatedClassifyConfig(**base, client_cpus=3, total_cpus=2, engine="deployment").check()


def test_the_summary_shows_a_small_dp_delta(tmp_path, capsys):
    from genforge.federated.run import print_summary

    print_summary(tmp_path, {"task": "classify", "val_loss": 1.08544, "dp_epsilon": 9.00996, "dp_delta": 1e-5})
    shown = capsys.readouterr().err
    assert "1e-05" in shown and "0.0000" not in shown and "1.0854" in shown and "9.0100" in shown
