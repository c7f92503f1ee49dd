"""ServeConfig validation and `--variant NAME=DIR[:WEIGHT]` parsing."""

import subprocess
import sys
from pathlib import Path

import pytest

from genforge.config import from_dict, usable_cpus
from genforge.errors import ConfigError
from genforge.serve.config import KeyCreateConfig, ServeConfig, Variant, parse_variant


def test_parse_variant():
    assert parse_variant("b=runs/chat") == Variant("b", Path("runs/chat"), 1.0)
    assert parse_variant("b=runs/chat:0.25") == Variant("b", Path("runs/chat"), 0.25, weighted=True)
    assert parse_variant("b=C:/models/x") == Variant("b", Path("C:/models/x"), 1.0)  # not a weight: part of the path
    for bad in ("runs/chat", "=runs/chat", "b=", "b=runs/chat:0", "b=runs/chat:-1"):
        with pytest.raises(ConfigError, match="--variant"):
            parse_variant(bad)


def test_variants_and_names():
    cfg = from_dict(ServeConfig, {"model": "runs/sft", "variant": ["lora=runs/lora:0.2"]})
    assert [(v.name, v.weight) for v in cfg.variants()] == [("sft", 1.0), ("lora", 0.2)]
    with pytest.raises(ConfigError, match="unique"):
        from_dict(ServeConfig, {"model": "runs/a", "name": "x", "variant": ["x=runs/b"]})


@pytest.mark.parametrize(("values", "match"), [
    ({}, "--model"),
    ({"model": "m", "max_batch": 0}, "max_batch"),
    ({"model": "m", "port": 70000}, "port"),
    ({"model": "m", "request_timeout": 0}, "request_timeout"),
    ({"model": "m", "cache_len": -1}, "cache_len"),
    ({"model": "m", "dtype": "float16"}, "dtype"),
    ({"model": "m", "rate_limit": 10**20}, "rate_limit must be <= 1000000"),
    ({"model": "m", "prefill_chunk": 10**8}, "prefill_chunk must be <= max_prefill_tokens"),
    ({"model": "m", "threads": 100_000}, "threads must be <= .*CPUs"),
])
def test_bad_values_are_config_errors(values, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(ServeConfig, values)


def test_serve_help_does_not_import_the_server():
    code = "import sys, genforge.cli; print(any(m in sys.modules for m in ('fastapi', 'torch', 'uvicorn')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_missing_model_folder_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from genforge.cli import app

    result = CliRunner().invoke(app, ["serve", "--model", str(tmp_path / "nope"), "--db",
                                      f"sqlite:///{tmp_path / 'k.db'}"])
    assert result.exit_code == 2 and result.output.strip().startswith("error: model ")
    assert len(result.output.strip().splitlines()) == 1


def test_a_killed_training_run_is_not_served(tmp_path, llama_dir):
    """A run killed before its end (checkpoints/, no manifest) holds an earlier run's or half-copied weights."""
    import shutil

    from typer.testing import CliRunner

    from genforge.cli import app

    killed = shutil.copytree(llama_dir, tmp_path / "killed")
    (killed / "checkpoints").mkdir()
    (killed / "manifest.json").unlink(missing_ok=True)
    result = CliRunner().invoke(app, ["serve", "--model", str(killed), "--db", f"sqlite:///{tmp_path / 'k.db'}"])
    error = result.output.strip().splitlines()[-1]  # after the JSON log line "loading model"
    assert result.exit_code != 0 and error.startswith("error: model ") and "is an unfinished genforge run" in error


def test_a_keys_rate_limit_is_bounded_before_the_database_overflows():
    with pytest.raises(ConfigError, match="rate_limit must be <= 1000000"):
        from_dict(KeyCreateConfig, {"name": "k1", "rate_limit": 10**20})
    assert from_dict(ServeConfig, {"model": "m", "threads": usable_cpus()}).threads == usable_cpus()


def test_a_busy_port_is_a_one_line_error_before_the_models_load(tmp_path):
    """Port 8000 taken by another server is a common first run: say so at once, not after loading every model
    in a JSON log line."""
    import socket

    from typer.testing import CliRunner

    from genforge.cli import app

    model = tmp_path / "model"
    model.mkdir()  # a folder, so only the port can stop serve before loading (it would fail on config.json)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--model", str(model), "--port", str(port), "--db",
                                          f"sqlite:///{tmp_path / 'k.db'}"])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (f"error: cannot listen on 127.0.0.1:{port} (Address already in use): pick "
                                     "another --port or --host, or stop what uses it")
