import dataclasses
import re
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest

from genforge.config import Config, dump_yaml, field, from_dict, load_config, to_dict
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
    with pytest.raises(ConfigError, match=r"^config key 'part\.weight' must be a finite number"):
        from_dict(Nested, {"part": {"weight": [text.replace(".", "")]}})  # a nested key has no flag to name


@dataclass
class Nested:
    part: Weights = field(default_factory=Weights)


def config_classes() -> list[type]:
    """Every stage config of genforge: the dataclasses of its config modules whose fields carry genforge's
    metadata (`genforge.config.field`), found by walking the package so a new one cannot be missed."""
    import importlib

    import genforge

    root = Path(genforge.__file__).parent
    classes = []
    for path in sorted([*root.rglob("config.py"), root / "recipes.py"]):
        module = importlib.import_module(".".join(path.relative_to(root.parent).with_suffix("").parts))
        classes += [obj for obj in vars(module).values() if dataclasses.is_dataclass(obj)
                    and obj.__module__ == module.__name__ and any("help" in f.metadata for f in dataclasses.fields(obj))]
    return classes


SAMPLES = {Path: ("runs/x", Path("runs/x")), int: ("3", 3), float: ("0.5", 0.5), list[Path]: (["a", "b"], [Path("a"), Path("b")])}


@pytest.mark.parametrize("cls", config_classes(), ids=lambda c: f"{c.__module__.removeprefix('genforge.')}.{c.__name__}")
def test_configs_built_from_python_coerce_their_fields_as_load_config_does(cls):
    """`CompressConfig(model="runs/lm")` must hold a Path, as through YAML or the CLI: later code calls .is_dir()."""
    assert issubclass(cls, Config), f"{cls.__name__} must derive from genforge.config.Config"
    hints = typing.get_type_hints(cls)
    given, expected = {}, {}
    for f in dataclasses.fields(cls):
        tp = next((t for t in SAMPLES if hints[f.name] in (t, t | None)), None)
        if tp is not None:
            given[f.name], expected[f.name] = SAMPLES[tp]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            given[f.name] = expected[f.name] = "x"  # a required str
    cfg = cls(**given)
    got = {name: getattr(cfg, name) for name in expected}
    assert got == expected and all(type(got[k]) is type(v) or isinstance(got[k], Path) for k, v in expected.items())
    number = next((name for name in given if hints[name] in (int, float)), None)
    if number is not None:
        with pytest.raises(ConfigError, match=f"^config key '{number}' must be (int|float), got 'many'$"):
            cls(**{**given, number: "many"})


def test_training_memory_is_checked_before_anything_is_allocated(monkeypatch):
    """16 bytes a parameter against the free memory, naming the flags; a model torch cannot even describe (its
    meta-device build overflows) is refused too; with no memory figure (not Linux) nothing is refused."""
    from genforge import config

    assert config.available_memory() > 0
    monkeypatch.setattr(config, "available_memory", lambda: 2**30)
    cfg = Demo(steps=3, lr=0.5)
    config.check_training_memory(lambda: 2**30 // 16, cfg, "steps", "lr")
    with pytest.raises(ConfigError, match=r"^--steps 3 --lr 0.5: a model of 67,108,865 parameters, whose training "
                                          r"needs ~1.0 GiB \(16 bytes a parameter: weights, gradients, AdamW moments\) "
                                          r"but 1.0 GiB of memory is free; choose smaller sizes$"):
        config.check_training_memory(lambda: 2**30 // 16 + 1, cfg, "steps", "lr")

    def overflow() -> int:
        raise RuntimeError("Storage size calculation overflowed with sizes=[4, 1]\nmore")

    with pytest.raises(ConfigError, match=r"^--steps 3: a model too large to build \(Storage size calculation "
                                          r"overflowed with sizes=\[4, 1\]\); choose smaller sizes$"):
        config.check_training_memory(overflow, cfg, "steps")
    monkeypatch.setattr(config, "available_memory", lambda: None)
    config.check_training_memory(lambda: 10**15, cfg, "steps")


# ---- flags that have no effect without another (`needs`) ---------------------------------------------------

FINETUNE_INPUTS = {"model": "m", "data": "d.csv", "out": "o"}


@pytest.mark.parametrize(("flags", "message"), [
    ({"adv_epsilon": 0.5}, "--adv-epsilon has no effect without --adversarial fgm|pgd|freelb|vat"),
    ({"adv_steps": 3, "adversarial": "fgm"}, "--adv-steps has no effect without --adversarial pgd|freelb|vat"),
    ({"adv_relative": True}, "--adv-relative has no effect without --adversarial fgm|pgd|freelb|vat"),
    ({"augment_ratio": 2.0},
     "--augment-ratio has no effect without --augment-attack charswap|homoglyph|invisible|synonym|pinyin"),
    ({"augment_random_ratio": 0.0, "augment_attack": ["charswap"]},
     "--augment-random-ratio has no effect without --augment-model"),
    ({"distill_temperature": 3.0}, "--distill-temperature has no effect without --teacher"),
    ({"lora_alpha": 16.0}, "--lora-alpha has no effect without --lora-r"),  # the default, but given as a flag
])
def test_a_flag_without_the_flag_it_needs_is_refused(flags, message):
    """Such flags were silently ignored: a run the user believed adversarial (or augmented, or distilled)
    trained as a plain one."""
    from genforge.finetune.config import ClassifyConfig

    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        load_config(ClassifyConfig, None, FINETUNE_INPUTS | flags)


def test_a_flag_with_the_flag_it_needs_is_taken():
    from genforge.finetune.config import ClassifyConfig, SftConfig

    cfg = load_config(ClassifyConfig, None, FINETUNE_INPUTS | {"adversarial": "pgd", "adv_steps": 3,
                                                               "augment_attack": ["charswap"], "augment_ratio": 2.0})
    assert (cfg.adv_steps, cfg.augment_ratio) == (3, 2.0)
    assert load_config(SftConfig, None, FINETUNE_INPUTS | {"adversarial": "fgm", "adv_epsilon": 0.5}).adv_epsilon == 0.5


def test_pretraining_refuses_adversarial_flags_without_a_method():
    from genforge.train.config import PretrainConfig

    with pytest.raises(ConfigError, match=r"^--adv-alpha has no effect without --adversarial pgd\|freelb\|vat$"):
        load_config(PretrainConfig, None, {"data": "d", "out": "o", "adv_alpha": 0.1})
    assert load_config(PretrainConfig, None, {"data": "d", "out": "o", "adversarial": "vat", "adv_alpha": 0.1}).adv_alpha == 0.1


def test_a_saved_config_reloads_and_a_written_key_counts_when_not_the_default(tmp_path):
    """A run's saved config.yaml lists every field, most at their defaults (adv_epsilon: 1.0 beside adversarial:
    none): reloaded with --config it must not trip the check, nor when a flag switches off what it needs. A key
    written with another value than its default is a choice, refused as a flag would be."""
    from genforge.finetune.config import ClassifyConfig

    saved = tmp_path / "config.yaml"
    for flags in ({}, {"adversarial": "pgd", "adv_epsilon": 0.5, "lora_r": 8, "lora_alpha": 32.0}):
        saved.write_text(dump_yaml(load_config(ClassifyConfig, None, FINETUNE_INPUTS | flags)))
        assert to_dict(load_config(ClassifyConfig, saved, {"max_steps": 7})) == to_dict(
            load_config(ClassifyConfig, None, FINETUNE_INPUTS | flags | {"max_steps": 7}))
    # the command line switching the saved run's adversarial training off makes its adv_epsilon moot: the config
    # says so (back at its default), so the new run's own saved config reloads in turn
    off = load_config(ClassifyConfig, saved, {"adversarial": "none"})
    assert off.adversarial == "none" and off.adv_epsilon == 1.0 and off.lora_alpha == 32.0
    saved.write_text(dump_yaml(off))
    assert to_dict(load_config(ClassifyConfig, saved)) == to_dict(off)
    saved.write_text(dump_yaml(load_config(ClassifyConfig, None, FINETUNE_INPUTS | flags)))
    with pytest.raises(ConfigError, match="^--adv-epsilon has no effect without --adversarial"):
        load_config(ClassifyConfig, saved, {"adversarial": "none", "adv_epsilon": 0.7})
    lora_off = tmp_path / "lora-off.yaml"  # written in the same file as the switch, the key is a contradiction
    lora_off.write_text(saved.read_text().replace("lora_r: 8", "lora_r: 0"))
    with pytest.raises(ConfigError, match="^--lora-alpha has no effect without --lora-r"):
        load_config(ClassifyConfig, lora_off)
    written = tmp_path / "mine.yaml"
    written.write_text("model: m\ndata: d.csv\nout: o\naugment_ratio: 2\n")
    with pytest.raises(ConfigError, match="^--augment-ratio has no effect without --augment-attack"):
        load_config(ClassifyConfig, written)
    written.write_text("model: m\ndata: d.csv\nout: o\naugment_ratio: 0.5\n")  # the default: no choice made
    assert load_config(ClassifyConfig, written).augment_ratio == 0.5
