import json
import shutil

import numpy as np
import pytest
import torch

from genforge.errors import ArtifactError, DataError
from genforge.train.data import WindowBatches, open_tokens, read_pack


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
    with pytest.raises(DataError, match="fewer than one window"):
        open_tokens(packed / "val.bin", "uint16", 10**7)
