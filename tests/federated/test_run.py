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
