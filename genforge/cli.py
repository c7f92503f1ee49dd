"""The `genforge` command: one typer app, one sub-command per lifecycle stage.

Stage commands are generated from their config dataclasses (`add_stage_command`), so a flag, a YAML
key and a validation rule are always the same thing and `--help` is always true. Implementations are
imported only when a command runs, which keeps `genforge --help` instant.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from genforge import __version__
from genforge.config import load_config
from genforge.errors import GenforgeError, Stopped

# Each module registers its commands with `register(app)`.
STAGE_MODULES = [
    "genforge.data.cli",
    "genforge.train.cli",
    "genforge.generate.cli",
    "genforge.finetune.cli",
    "genforge.adversarial.cli",
    "genforge.serve.cli",
    "genforge.compress.cli",
    "genforge.paradigms.cli",
    "genforge.federated.cli",
    "genforge.apps.cli",
    "genforge.recipes",
]

app = typer.Typer(
    name="genforge",
    help="Private generative text models from your own data: data -> pretrain -> finetune -> compress -> serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def fail(message: str, code: int = 2) -> typing.NoReturn:
    """Print a one-line error to stderr and exit non-zero."""
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def friendly_errors(fn: Callable) -> Callable:
    """Turn user-fixable failures into one line and an exit code; GENFORGE_DEBUG=1 shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            rerun = ("rerun with --resume to continue, or give another --out to start over"
                     if "resume" in inspect.signature(wrapper).parameters else "rerun the command to start over")
            typer.secho(f"interrupted: the output is left unfinished (no manifest); {rerun}", err=True)
            raise typer.Exit(130) from None
        except Stopped as e:
            typer.secho(str(e), fg="yellow", err=True)
            raise typer.Exit(e.exit_code) from None
        except BrokenPipeError:  # the reader went away (`| head`): nothing to report
            with contextlib.suppress(OSError, ValueError):  # stdout to /dev/null: the exit's flush cannot fail again
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None  # 128 + SIGPIPE, as `yes | head` reports it
        except GenforgeError as e:
            if os.environ.get("GENFORGE_DEBUG"):
                raise
            fail(str(e))
        except OSError as e:
            if os.environ.get("GENFORGE_DEBUG"):
                raise
            where = f": {e.filename}" if getattr(e, "filename", None) else ""
            fail(f"{e.strerror or e}{where}")
        except Exception as e:  # a bug, not the user's fault: still one line, with how to see more
            if os.environ.get("GENFORGE_DEBUG"):
                raise
            fail(f"internal error {type(e).__name__}: {e} (rerun with GENFORGE_DEBUG=1 for the traceback)", code=1)

    return wrapper


def _cli_type(tp: Any) -> Any | None:
    """The type typer should parse a config field as, or None if the field is YAML-only."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            return None
        tp = args[0]
    if typing.get_origin(tp) is list:
        item = (typing.get_args(tp) or (str,))[0]
        return list[item] if item in (str, Path, int, float) else None
    return tp if tp in (str, Path, int, float, bool) else None


def _option_help(f: dataclasses.Field) -> str:
    """The field's help for --help, escaped: the CLI renders rich markup, which would eat `[[text, label]]`."""
    from rich.markup import escape

    text = f.metadata.get("help", "").rstrip(".")
    if f.metadata.get("choices"):
        text += f"; one of: {', '.join(map(str, f.metadata['choices']))}"
    if f.default is not dataclasses.MISSING and f.default is not None and f.default != []:
        default = f.default.name if isinstance(f.default, Path) else f.default
        text += f" (default: {default})"
    return escape(text + ".")


def add_stage_command(group: typer.Typer, name: str, config_cls: type, run: str, help: str,
                      examples: list[str] = ()) -> None:
    """Register `name` on `group`: flags from `config_cls` fields, plus `--config FILE`.

    `run` is "module:function"; the function takes the resolved config. Flags override the file.
    """
    hints = typing.get_type_hints(config_cls)
    params = [inspect.Parameter(
        "config", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None,
        default=typer.Option(None, "--config", "-c", help="YAML config file; command-line flags override it."))]
    annotations: dict[str, Any] = {"config": Path | None}
    omitted = getattr(config_cls, "cli_omitted", ())  # fields the command sets itself
    for f in dataclasses.fields(config_cls):
        cli_tp = _cli_type(hints[f.name])
        if cli_tp is None or f.name in omitted:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.metadata.get("argument"):
            default = typer.Argument(None, help=_option_help(f), show_default=False)
        elif cli_tp is bool:
            default = typer.Option(None, f"{flag}/--no-{flag[2:]}", help=_option_help(f), show_default=False)
        else:
            default = typer.Option(None, flag, help=_option_help(f), show_default=False)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=cli_tp | None,
                                        default=default))
        annotations[f.name] = cli_tp | None

    @friendly_errors
    def command(**kwargs: Any) -> Any:
        config_path = kwargs.pop("config")
        overrides = {k: v for k, v in kwargs.items() if v is not None and v != []}
        cfg = load_config(config_cls, config_path, overrides)
        module, func = run.split(":")
        return getattr(importlib.import_module(module), func)(cfg)

    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = annotations
    command.__name__ = name.replace("-", "_")
    # typer (0.20 with click 8.3) drops argument help from the panels, so name arguments in the text.
    arguments = [f for f in dataclasses.fields(config_cls) if f.metadata.get("argument")]
    help += "".join(f"\n\n{f.name.upper()}: {_option_help(f)}" for f in arguments)
    epilog = "Examples:\n\n" + "\n\n".join(f"  $ {e}" for e in examples) if examples else None
    group.command(name, help=help, epilog=epilog)(command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"genforge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """Private generative text models from your own data."""


for _module in STAGE_MODULES:
    importlib.import_module(_module).register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
