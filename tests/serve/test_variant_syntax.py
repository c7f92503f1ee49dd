"""`--variant NAME=FOLDER[:WEIGHT]`: a weight that is not a number is named as such, not as a missing folder."""

from pathlib import Path

import pytest

from genforge.errors import ConfigError
from genforge.serve.config import Variant, parse_variant


def test_a_weight_that_is_not_a_number_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"'abc' after the last ':' is not a number .* NAME=FOLDER\[:WEIGHT\]"):
        parse_variant(f"a={tmp_path}:abc")
    for weight in ("inf", "nan"):
        with pytest.raises(ConfigError, match="the weight must be a finite number > 0"):
            parse_variant(f"a={tmp_path}:{weight}")
    folder = tmp_path / "run:abc"  # a folder whose name holds ':' is still a folder
    folder.mkdir()
    assert parse_variant(f"a={folder}") == Variant("a", folder, 1.0)
    assert parse_variant("b=C:/models/x") == Variant("b", Path("C:/models/x"), 1.0)
