import json
import shutil

import numpy as np
import pytest
import torch

from genforge.errors import ArtifactError, DataError
from genforge.train.data import WindowBatches, eval_batches, open_tokens, read_pack


def windows(tokens, accum=2, seed=7):
    return WindowBatches(tokens, 9, 4, accum, seed, lambda rows, g: {"input_ids": rows})


def test_batches_are_a_pure_function_of_the_step():
    tokens = np.arange(10_000, dtype=np.uint16)
    a, b = windows(tokens), windows(tokens)
    assert torch.equal(a.batch(5, 1)["input_ids"], b.batch(5, 1)["input_ids"])  # any order, any process
    assert not torch.equal(a.batch(5, 0)["input_ids"], a.batch(5, 1)["input_ids"])
    assert not torch.equal(a.batch(5, 0)["input_ids"], a.batch(6, 0)["input_ids"])
    rows = a.batch(3, 0)["input_ids"]
    assert rows.dtype == torch.int64 and rows.shape == (4, 9)
    assert torch.equal(rows[:, 1:] - rows[:, :-1], torch.ones(4, 8, dtype=torch.int64))  # contiguous windows
    assert a.state_dict(10) == {"next_step": 10, "seed": 7, "tokens": 10_000, "window": 9, "sequences_seen": 80}


def test_micro_batches_of_a_step_partition_one_draw():
    """The global batch of a step does not depend on how it is split into micro-batches or processes."""
    tokens = np.arange(10_000, dtype=np.uint16)
    two = torch.cat([windows(tokens, accum=2).batch(4, m)["input_ids"] for m in range(2)])
    one = WindowBatches(tokens, 9, 8, 1, 7, lambda rows, g: {"input_ids": rows}).batch(4, 0)["input_ids"]
    assert torch.equal(two, one)


def test_pack_folder_checks(tmp_path, packed):
    data = tmp_path / "data"
    shutil.copytree(packed, data)
    assert read_pack(data)["vocab_size"] == 320
    with open(data / "val.bin", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(DataError, match="val.bin holds .* tokens but pack.json says"):
        read_pack(data)
    (data / "val.bin").unlink()
    with pytest.raises(DataError, match="val.bin is missing"):
        read_pack(data)
    manifest = json.loads((data / "pack.json").read_text())
    (data / "pack.json").write_text(json.dumps({**manifest, "stage": "data.prepare"}))
    with pytest.raises(ArtifactError, match="expected data.pack"):
        read_pack(data)
    (data / "pack.json").unlink()
    (data / "manifest.json").write_text(json.dumps({"stage": "data.prepare"}))
    with pytest.raises(DataError, match="prepared but not packed: run `genforge data pack --data"):
        read_pack(data)
    with pytest.raises(DataError, match="fewer than one window"):
        open_tokens(packed / "val.bin", "uint16", 10**7)


def test_an_empty_token_file_is_a_data_error(tmp_path):
    """`data prepare --val-fraction 0` packs an empty val.bin, which numpy cannot map (was an internal error)."""
    (tmp_path / "val.bin").write_bytes(b"")
    with pytest.raises(DataError, match="val.bin holds no tokens .*--val-fraction 0"):
        open_tokens(tmp_path / "val.bin", "uint16", 65)


@pytest.mark.parametrize("max_batches, per_process", [(1, 1), (3, 2), (4, 2)])
def test_every_process_gets_as_many_eval_batches(max_batches, per_process):
    """FSDP forwards are collectives: one process with fewer batches than another would hang them all."""
    tokens = np.arange(2_000, dtype=np.uint16)
    keep = lambda rows, g: {"input_ids": rows, "labels": rows}  # noqa: E731
    alone = torch.cat([b["input_ids"] for b in eval_batches(tokens, 9, 8, 4, keep, max_batches=max_batches)])
    ranks = [list(eval_batches(tokens, 9, 8, 4, keep, max_batches=max_batches, rank=r, world=2)) for r in (0, 1)]
    assert [len(r) for r in ranks] == [per_process, per_process]
    scored = torch.cat([b["input_ids"] for r in ranks for b in r if (b["labels"] != -100).any()])
    assert sorted(map(tuple, scored.tolist())) == sorted(map(tuple, alone.tolist()))  # none lost, none twice


def targets(batches):
    """The positions (token values of np.arange) a list of causal-LM batches predicts, sorted."""
    return sorted(t for b in batches for t in b["labels"][b["labels"] != -100].tolist())


@pytest.mark.parametrize("max_batches", [0, 5])
def test_eval_targets_do_not_depend_on_the_process_count(max_batches):
    """Val loss and bits-per-byte are the same for 1, 2 or 3 processes: the ranks' batches together score
    exactly the targets one process scores (the last, short batches are not dropped), and a process short
    of a batch gets one without targets, so that each runs as many forwards (FSDP)."""
    from genforge.train.objectives import ClmObjective

    tokens = np.arange(1_000, dtype=np.uint16)
    make = ClmObjective().make_batch
    alone = targets(list(eval_batches(tokens, 33, 32, 4, make, max_batches=max_batches)))
    if not max_batches:
        assert alone == list(range(1, 993))  # 31 windows of 32 targets: every token after the first, once
    for world in (2, 3):
        ranks = [list(eval_batches(tokens, 33, 32, 4, make, max_batches=max_batches, rank=r, world=world))
                 for r in range(world)]
        assert len({len(r) for r in ranks}) == 1  # as many forwards on every process
        assert targets([b for r in ranks for b in r]) == alone, f"world {world}"
