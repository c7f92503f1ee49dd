"""Fixtures of the paradigm tests: one torch thread, a tiny packed text folder, a small digits image folder."""

from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The CPU is shared: tests use one torch thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def packed(pack_shakespeare) -> Path:
    """40 KB of tiny-shakespeare through the real data chain (prepare -> 320-token BPE -> pack)."""
    return pack_shakespeare(40_000)


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    """scikit-learn's 8x8 digits 0-2 as grey PNGs, one sub-folder per class (about 540 images)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits")
    d = load_digits(n_class=3)
    for i, (image, label) in enumerate(zip(d.images, d.target, strict=True)):
        folder = root / str(label)
        folder.mkdir(exist_ok=True)
        Image.fromarray((image * 255 / 16).astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def no_val_documents(packed, tmp_path_factory) -> Path:
    """A copy of `packed` whose val.bin keeps its size (so pack.json still vouches for it) but holds no EOS,
    hence no documents: data that passes the pack check and is refused only once its sentences are read."""
    import json
    import shutil

    folder = shutil.copytree(packed, tmp_path_factory.mktemp("no_val_documents") / "data")
    pack = json.loads((folder / "pack.json").read_text(encoding="utf-8"))
    not_eos = (pack["eos_id"] + 1) % pack["vocab_size"]
    np.full(pack["val_tokens"], not_eos, dtype=pack["dtype"]).tofile(folder / "val.bin")
    return folder
