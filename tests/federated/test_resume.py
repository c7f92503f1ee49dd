"""A federated run stopped after a round continues with --resume as if it had never stopped."""

import json

import pytest
import torch

from genforge.errors import ArtifactError, ConfigError
from genforge.federated.config import FederatedClassifyConfig
from genforge.federated.report import RoundLog
from genforge.federated.resume import CHECKPOINT, check_fresh, load_round
from genforge.federated.run import federated


def test_the_round_log_keeps_finished_rounds_and_drops_a_cut_line(tmp_path):
    log = RoundLog(tmp_path)
    for k in range(3):
        log.write(k, {"accuracy": 0.5 + k / 10}, [], {}, None)
    log.close()
    with (tmp_path / "rounds.jsonl").open("a") as f:
        f.write('{"round": 3, "val_accu')  # a kill mid-write
    resumed = RoundLog(tmp_path, keep=1, seconds=30.0)
    assert [r["round"] for r in resumed.rows] == [0, 1]
    assert [json.loads(line)["round"] for line in (tmp_path / "rounds.jsonl").read_text().splitlines()] == [0, 1]
    assert resumed.seconds() >= 30.0
    resumed.close()


def test_a_damaged_or_missing_checkpoint_is_one_line(tmp_path):
    with pytest.raises(ArtifactError, match="nothing to resume: .*federated.pt does not exist; drop --resume"):
        load_round(tmp_path)
    (tmp_path / CHECKPOINT).parent.mkdir()
    (tmp_path / CHECKPOINT).write_bytes(b"\x80\x02 not a checkpoint")
    with pytest.raises(ArtifactError, match="federated.pt is damaged .*start again without --resume"):
        load_round(tmp_path)
    with pytest.raises(ArtifactError, match="holds an unfinished run"):
        check_fresh(tmp_path)


def test_only_resume_continues_a_run_that_stopped_midway(tmp_path):
    from genforge.artifacts import write_manifest
    from genforge.federated.resume import save_round
    from genforge.federated.server import build_strategy

    strategy = build_strategy(FederatedClassifyConfig(model="m", data="d.csv", out=tmp_path, clients=2))
    save_round(tmp_path, 3, {"w": torch.zeros(2)}, strategy, 60.0)  # killed in round 4: nothing exported
    with pytest.raises(ArtifactError, match="holds an unfinished run: add --resume to continue it, or choose another"):
        check_fresh(tmp_path)
    write_manifest(tmp_path, "finetune", None, metrics={})
    check_fresh(tmp_path)  # a finished run may be redone


def test_a_stopped_run_resumes_to_the_same_model_as_an_uninterrupted_one(tmp_path, bert_dir, sentiment_rows,
                                                                         csv_file):
    # two clients: their weighted sum is the same float whichever reply comes first, so the runs can match exactly
    files = [csv_file(f"branch{k}.csv", sentiment_rows[k::2]) for k in range(2)]
    val = csv_file("val.csv", sentiment_rows[::5])
    settings = {"model": bert_dir, "val_data": val, "clients": 2, "partition": "by-file", "client_data": files,
                "local_steps": 2, "batch_size": 8, "seq_len": 32, "lr": 3e-3, "bf16": False, "strategy": "fedadam",
                "server_lr": 0.01}
    straight = federated(FederatedClassifyConfig(out=tmp_path / "straight", rounds=2, **settings), "classify")

    stopped = tmp_path / "stopped"  # round 1 of a 2-round run and a finished 1-round run: the same state
    federated(FederatedClassifyConfig(out=stopped, rounds=1, **settings), "classify")
    with pytest.raises(ConfigError, match="--resume: lr 0.001 differs from the interrupted run's 0.003"):
        federated(FederatedClassifyConfig(out=stopped, rounds=2, resume=True, **{**settings, "lr": 1e-3}),
                  "classify")
    with pytest.raises(ConfigError, match="already done 1 of its rounds; give --rounds above 1"):
        federated(FederatedClassifyConfig(out=stopped, rounds=1, resume=True, **settings), "classify")
    resumed = federated(FederatedClassifyConfig(out=stopped, rounds=2, resume=True, **settings), "classify")

    rows = {name: [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
            for name, out in (("straight", straight), ("resumed", resumed))}
    assert [r["round"] for r in rows["resumed"]] == [0, 1, 2]
    for a, b in zip(rows["straight"], rows["resumed"], strict=True):
        assert a["val_accuracy"] == pytest.approx(b["val_accuracy"]) and a["val_loss"] == pytest.approx(b["val_loss"])
    ours, theirs = load_round(resumed), load_round(straight)
    assert ours["round"] == theirs["round"] == 2
    for name, tensor in theirs["tensors"].items():
        torch.testing.assert_close(ours["tensors"][name], tensor)


def test_a_fresh_run_into_a_finished_folder_drops_the_old_tensorboard_logs(tmp_path):
    """The old run's event file stayed in logs/, so TensorBoard drew both runs' curves over the same rounds."""
    from genforge.federated.resume import clear

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "events.out.tfevents.1.old.0").write_bytes(b"old run")
    clear(tmp_path)
    assert not (tmp_path / "logs").exists()
