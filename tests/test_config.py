from dataclasses import dataclass
from pathlib import Path

import pytest

from genforge.config import dump_yaml, field, from_dict, load_config, to_dict
from genforge.errors import ConfigError


@dataclass
class Demo:
    inputs: list[Path] = field(default_factory=list, help="files", argument=True)
    out: Path = field(Path("out"), help="output folder")
    split_by: str = field("paragraph", help="unit", choices=("paragraph", "line", "file"))
    lr: float = field(1e-3, help="learning rate")
    steps: int = field(10, help="steps")
    shuffle: bool = field(True, help="shuffle")
    note: str | None = field(None, help="free text")

    def check(self) -> None:
        if self.steps <= 0:
            raise ConfigError(f"steps must be positive, got {self.steps}")


def test_defaults_yaml_and_overrides_layer(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("lr: 0.1\nsteps: 5\nsplit-by: line\n")
    cfg = load_config(Demo, cfg_file, {"steps": 7, "note": None})
    assert (cfg.lr, cfg.steps, cfg.split_by, cfg.shuffle) == (0.1, 7, "line", True)


def test_unknown_key_is_named(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key 'learning_rate'"):
        load_config(Demo, cfg_file)


@pytest.mark.parametrize("values, message", [
    ({"steps": "many"}, "'steps' must be int"),
    ({"steps": 1.5}, "'steps' must be int"),
    ({"shuffle": "maybe"}, "'shuffle' must be bool"),
    ({"split_by": "word"}, "'split_by' must be one of"),
    ({"steps": 0}, "steps must be positive"),
    ({"out": None}, "'out' must be set"),
])
def test_bad_values_are_named(values, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Demo, values)


def test_bad_yaml_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Demo, bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(Demo, tmp_path / "missing.yaml")


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(Demo, None, {"inputs": ["a.txt", "b"], "lr": 0.5})
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(Demo, path) == cfg
    assert to_dict(cfg)["inputs"] == ["a.txt", "b"]


def test_text_options_that_are_not_utf8_are_one_line_errors():
    from genforge.config import check_text, not_utf8
    from genforge.finetune.config import ChatConfig
    from genforge.generate.config import GenerateConfig

    stray = b"caf\xe9".decode("utf-8", "surrogateescape")  # a Latin-1 terminal's bytes in a UTF-8 argv
    assert not_utf8(stray) == "byte 0xe9" and not_utf8("\ud800") == "lone surrogate \\ud800"
    assert not_utf8("café 你好 🙂") is None
    check_text("--prompt", None)
    with pytest.raises(ConfigError, match=r"^--prompt is not UTF-8 text \(byte 0xe9\)"):
        GenerateConfig(model=Path("m"), prompt=stray).check()
    with pytest.raises(ConfigError, match=r"^--system is not UTF-8 text"):
        ChatConfig(model=Path("m"), system=stray).check()


@dataclass
class Weights:
    weight: list[float] = field(default_factory=list, help="weights")
    share: float = field(0.5, help="a share in [0, 1]")

    def check(self) -> None:
        if not 0 <= self.share <= 1:
            raise ConfigError(f"--share must be in [0, 1], got {self.share}")


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", ".nan", "-.inf"])
def test_nan_and_infinity_are_refused_for_every_float(tmp_path, text):
    """NaN passes a check written `lr < 0`; the shared check names the flag whatever the stage checks."""
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"lr: {text}\n")
    with pytest.raises(ConfigError, match=r"^--lr must be a finite number, got (nan|-?inf)$"):
        load_config(Demo, cfg_file)
    with pytest.raises(ConfigError, match="^--lr must be a finite number"):
        load_config(Demo, None, {"lr": float(text.replace(".", ""))})
    with pytest.raises(ConfigError, match="^--weight must be a finite number"):
        from_dict(Weights, {"weight": [1.0, text.replace(".", "")]})
    with pytest.raises(ConfigError, match=r"^--share must be in \[0, 1\]"):  # a stage's own message says more
        from_dict(Weights, {"share": "inf"})
    assert from_dict(Weights, {"weight": [1e308, 0.0], "share": 1}).weight == [1e308, 0.0]
