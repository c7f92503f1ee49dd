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
