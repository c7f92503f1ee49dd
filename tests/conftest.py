import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets laid beside the repository (../shared/data), as in CI."""
    assert SHARED_DATA.is_dir(), f"real test data expected at {SHARED_DATA} (see shared/data/README.md)"
    return SHARED_DATA


@pytest.fixture(scope="session")
def tokenizer(shared_data):
    """A 384-token byte-level BPE of tiny-shakespeare, with genforge's special tokens and chat template."""
    from genforge.data.tokenizer import build_bpe, wrap_for_transformers

    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:50_000]
    return wrap_for_transformers(build_bpe(iter(text.split("\n\n")), 384, show_progress=False))


@pytest.fixture(scope="session")
def save_folder():
    """save_folder(model, tokenizer, folder) -> folder: a tiny model saved as an HF model folder."""

    def save(model, tokenizer, folder: Path) -> Path:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return folder

    return save
