"""Stage configurations: plain dataclasses, read from YAML, overridden from the CLI, saved with outputs.

Every stage declares one dataclass. Each field may carry `metadata={"help": ..., "choices": (...)}`
(and `"argument": True` for a positional CLI argument). The same dataclass drives the YAML file, the
CLI flags (see `genforge.cli.add_stage_command`) and validation, so the three never disagree.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from genforge.errors import ConfigError

C = TypeVar("C")


def field(default: Any = dataclasses.MISSING, *, help: str = "", choices: tuple | None = None,
          argument: bool = False, default_factory: Any = dataclasses.MISSING, needs: tuple[str, ...] = ()) -> Any:
    """A dataclass field with the CLI/YAML metadata genforge uses (help text, allowed values).

    `needs` = (other field, *values): the field has no effect unless the other field takes one of `values`
    (none listed: unless it differs from its default), so setting it alone is refused (`check_needs`)."""
    metadata = {"help": help, "choices": choices, "argument": argument, "needs": needs}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or raise a ConfigError naming the key."""
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key '{name}' must be set (got null)")
    origin = typing.get_origin(tp)
    try:
        if origin in (list, tuple):
            (item_tp, *_) = typing.get_args(tp) or (str,)
            items = value if isinstance(value, list | tuple) else [value]
            return [_coerce(name, v, item_tp) for v in items]
        if origin is dict or tp is dict:
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
                return value.lower() in ("true", "yes", "1")
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is Path:
            return Path(value).expanduser()
        if tp is str:
            if isinstance(value, dict | list):
                raise ValueError
            return str(value)
        if tp is Any:
            return value
    except (TypeError, ValueError):
        pass
    else:
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            return from_dict(tp, value, prefix=f"{name}.")
        if dataclasses.is_dataclass(tp) and isinstance(value, tp):
            return value
    type_name = getattr(tp, "__name__", str(tp))
    raise ConfigError(f"config key '{name}' must be {type_name}, got {value!r}")


def from_dict(cls: type[C], values: dict[str, Any], prefix: str = "") -> C:
    """Build a config dataclass from a plain dict: unknown keys and bad values raise ConfigError."""
    if not isinstance(values, dict):
        raise ConfigError(f"config {prefix.rstrip('.') or 'file'} must be a mapping of keys to values")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k.replace("-", "_") not in fields]
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}' (known: {', '.join(sorted(fields))})")
    hints = _hints(cls)
    kwargs = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        kwargs[name] = _coerce(prefix + name, value, hints[name])
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"config key '{prefix}{missing[0]}' is required")
    cfg = cls(**kwargs)
    validate(cfg, prefix)
    return cfg


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The declared field types of a config class, resolved once per class (annotations are strings here)."""
    return typing.get_type_hints(cls)


def coerce_fields(cfg: Any) -> None:
    """Convert each field of a config dataclass, in place, to its declared type as `load_config` does (a str to
    a Path, "3" to an int, ...), or raise a ConfigError naming the field. None is left to the config's own
    `check()`: some fields default to None until a flag is given. Run on construction by `Config`."""
    hints = _hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value is not None:
            setattr(cfg, f.name, _coerce(f.name, value, hints[f.name]))


class Config:
    """Base of every stage's config dataclass: its fields are coerced on construction (`coerce_fields`), so a
    config built from Python (`CompressConfig(model="runs/lm", ...)`, `dataclasses.replace`) holds the same
    types as one from YAML or the CLI, not a str where later code calls Path methods."""

    def __post_init__(self) -> None:
        coerce_fields(self)


def usable_cpus() -> int:
    """Cores this process may use (affinity-aware, unlike os.cpu_count); here, without torch, so that flag
    checks can use it."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def flag_values(cfg: Any, *names: str) -> str:
    """The fields `names` of `cfg` as the flags that set them ("--hidden-size 256 --num-layers 4"), for messages."""
    return " ".join(f"--{name.replace('_', '-')} {getattr(cfg, name)}" for name in names)


def available_memory() -> int | None:
    """Bytes this process may still allocate: the kernel's MemAvailable, capped by a cgroup v2 limit (a
    container's); None where neither can be read (not Linux)."""
    sizes = []
    try:
        meminfo = Path("/proc/meminfo").read_text()
        sizes += [int(line.split()[1]) * 1024 for line in meminfo.splitlines() if line.startswith("MemAvailable:")]
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            sizes.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(sizes) if sizes else None


TRAINING_BYTES_PER_PARAM = 16  # fp32 weights 4 + gradients 4 + AdamW's two moments 8


def check_training_memory(count_params: Callable[[], int], cfg: Any, *names: str) -> None:
    """Refuse, before allocating anything, size flags (the fields `names` of `cfg`) whose model cannot be
    trained in the free memory.

    Training in fp32 holds about 16 bytes per parameter (weights 4, gradients 4, AdamW's two moments 8),
    activations not counted, so this is a floor; it is held against host memory, where every model is built
    first. Without it an absurd size ends in an allocator error ("can't allocate memory") or, worse, thrashes
    the machine. `count_params()` counts the parameters without allocating them (a build on torch's meta
    device, `genforge.models.presets.meta_params`); it raises RuntimeError when one tensor would be too large
    for torch even to describe, refused here too.
    """
    flags = flag_values(cfg, *names)
    try:
        params = count_params()
    except RuntimeError as e:
        raise ConfigError(f"{flags}: a model too large to build ({str(e).splitlines()[0]}); choose smaller sizes"
                          ) from None
    need, free = params * TRAINING_BYTES_PER_PARAM, available_memory()
    if free is not None and need > free:
        raise ConfigError(f"{flags}: a model of {params:,} parameters, whose training needs ~{need / 2**30:,.1f} GiB "
                          f"({TRAINING_BYTES_PER_PARAM} bytes a parameter: weights, gradients, AdamW moments) but "
                          f"{free / 2**30:,.1f} GiB of memory is free; choose smaller sizes")


def check_threads(flag: str, threads: int) -> None:
    """Refuse more threads than usable CPUs: torch/OpenMP take absurd counts and exhaust the machine (fork
    failures) or crash (a segfault) instead of refusing them."""
    if threads > usable_cpus():
        raise ConfigError(f"{flag} must be <= {usable_cpus()}, the CPUs this process may use; got {threads}")


def validate(cfg: Any, prefix: str = "") -> None:
    """Check `choices` metadata, let the dataclass check itself (a `check()` method, if any), then refuse
    NaN and infinity in any float field (`refuse_non_finite`); after `check()`, whose messages say more.
    `prefix`: where a nested config sits in its file ("channels.webhook."), named instead of a flag."""
    for f in dataclasses.fields(cfg):
        choices = f.metadata.get("choices")
        value = getattr(cfg, f.name)
        if choices and value is not None:
            values = value if isinstance(value, list) else [value]
            for v in values:
                if v not in choices:
                    raise ConfigError(f"config key '{f.name}' must be one of {', '.join(map(str, choices))}; got {v!r}")
    check = getattr(cfg, "check", None)
    if callable(check):
        check()
    for f in dataclasses.fields(cfg):
        refuse_non_finite(f.name, getattr(cfg, f.name), prefix)


# YAML's .nan/.inf and the CLI's "nan"/"inf" are floats; NaN passes every range check written as `x < 0`
# and ends as a NaN model, infinity as a crash far away (int(inf)). No setting means anything at either.
def refuse_non_finite(name: str, value: Any, prefix: str = "") -> None:
    """Refuse a float (or a list of floats) that is NaN or infinite, naming the flag (or, for a config nested
    in a file under `prefix`, the key: it has no flag)."""
    for v in value if isinstance(value, list) else [value]:
        if isinstance(v, float) and not math.isfinite(v):
            where = f"config key '{prefix}{name}'" if prefix else f"--{name.replace('_', '-')}"
            raise ConfigError(f"{where} must be a finite number, got {v}")


# Bytes that were not UTF-8 in argv or stdin reach Python as surrogate escapes (U+DC80-U+DCFF), a JSON body may
# spell a lone surrogate: strings no UTF-8 text can hold, which fail far away (a tokenizer's TypeError).
def not_utf8(text: str) -> str | None:
    """What keeps `text` from being UTF-8 text ("byte 0xff" or "lone surrogate \\ud800"); None when nothing does."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(text[e.start])
        return f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"lone surrogate \\u{code:04x}"
    return None


def bad_text_in(value: Any, problem_of: Any = not_utf8) -> tuple[str, str] | None:
    """(dotted path, problem) of the first string or key of a JSON value that `problem_of` finds fault with
    ("messages.0.content", "lone surrogate \\ud800"; a bad key is named by its path, escaped; "" is the value
    itself); None when there is none. JSON may spell text no UTF-8 holds, which would fail far away."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:  # a loop, not recursion: a value may nest as deeply as json.loads allows
        where, value = stack.pop()
        if isinstance(value, str):
            problem = problem_of(value)
            if problem:
                return where, problem
        elif isinstance(value, dict | list):
            items = [(f"{where}.{k}" if where else str(k), v)
                     for k, v in (value.items() if isinstance(value, dict) else enumerate(value))]
            for path, _ in items:
                problem = problem_of(path)  # a key
                if problem:
                    return path.encode("utf-8", "backslashreplace").decode(), problem
            stack.extend(reversed(items))
    return None


def check_text(flag: str, text: str | None) -> None:
    """Refuse a text option that is not UTF-8 (bytes a terminal in another encoding put into argv): it would
    fail far away, in the tokenizer, as an internal error."""
    problem = None if text is None else not_utf8(text)
    if problem:
        raise ConfigError(f"{flag} is not UTF-8 text ({problem}); set the terminal (or the input) to UTF-8")


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return data


def default_of(cfg: Any, name: str) -> Any:
    """The declared default of field `name` of a config dataclass (a default_factory's product)."""
    f = next(f for f in dataclasses.fields(cfg) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def given_keys(cfg: Any, written: Any = (), flags: Any = ()) -> set[str]:
    """The fields of `cfg` a user chose: every command-line flag in `flags`, and each key `written` in a file
    (a YAML config, a recipe step) whose value is not the default. A saved config.yaml lists every field, most
    at their defaults: such a key says nothing about what the user asked for."""
    return set(flags) | {k for k in written if getattr(cfg, k) != default_of(cfg, k)}


def needs_met(cfg: Any, f: dataclasses.Field) -> bool:
    """Whether field `f` of `cfg` has an effect: its `needs` metadata (other field, *values) is satisfied."""
    if not f.metadata.get("needs"):
        return True
    needed, *values = f.metadata["needs"]
    value = getattr(cfg, needed)
    return value in values if values else value != default_of(cfg, needed)


def check_needs(cfg: Any, given: set[str], flags: Any = ()) -> None:
    """Refuse a given field (`given_keys`) that has no effect because the field its `needs` metadata names is
    not set as it needs ("--adv-epsilon has no effect without --adversarial fgm|pgd|freelb|vat"): silently
    ignored, it would leave the user believing a run was trained as it was not. A file's key is let through
    when a command-line flag in `flags` sets the field it needs: `--config saved.yaml --adversarial none`
    asks for the saved run without adversarial training, its adv_epsilon moot (`without_moot` resets it)."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for name, f in fields.items():
        if name not in given or needs_met(cfg, f):
            continue
        needed, *values = f.metadata["needs"]
        if needed in flags and name not in flags:
            continue
        shown = values or fields[needed].metadata.get("choices") or ()
        wanted = f" {'|'.join(map(str, shown))}" if shown else ""
        raise ConfigError(f"--{name.replace('_', '-')} has no effect without --{needed.replace('_', '-')}{wanted}")


def without_moot(cfg: C) -> C:
    """`cfg` with every field that has no effect (`needs_met`) back at its default: the config a run saves
    then says what it did, and reloads with `--config` without tripping `check_needs`."""
    moot = {f.name: default_of(cfg, f.name) for f in dataclasses.fields(cfg)
            if not needs_met(cfg, f) and getattr(cfg, f.name) != default_of(cfg, f.name)}
    return dataclasses.replace(cfg, **moot) if moot else cfg


def load_config(cls: type[C], path: Path | None = None, overrides: dict[str, Any] | None = None) -> C:
    """The resolved config of a stage: dataclass defaults < YAML file < CLI overrides (None = not given).
    A flag or key that has no effect with the others is refused (`check_needs`)."""
    written = read_yaml(path) if path else {}
    written = {k.replace("-", "_"): v for k, v in written.items()}
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    cfg = from_dict(cls, written | flags)
    check_needs(cfg, given_keys(cfg, written, flags), flags)
    return without_moot(cfg)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A YAML/JSON-safe dict of a config (Paths as strings, nested dataclasses as dicts)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)
