import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import typer
from typer.testing import CliRunner

from genforge.cli import add_stage_command
from genforge.config import field
from genforge.errors import DataError

CALLS = []


@dataclass
class EchoConfig:
    inputs: list[Path] = field(default_factory=list, help="input files", argument=True)
    out: Path = field(Path("out"), help="output folder")
    mode: str = field("a", help="mode", choices=("a", "b"))
    fail: bool = field(False, help="raise a user error")


def echo_stage(cfg: EchoConfig):
    if cfg.fail:
        raise DataError(f"no usable documents in {cfg.inputs[0]}")
    CALLS.append(cfg)


def make_app():
    app = typer.Typer()
    add_stage_command(app, "echo", EchoConfig, run=f"{__name__}:echo_stage", help="Echo.", examples=["genforge echo x"])
    app.command("noop")(lambda: None)  # a second command keeps typer in group mode
    return app


def test_flags_override_config_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mode: b\nout: from_file\n")
    result = CliRunner().invoke(make_app(), ["echo", "x.txt", "y.txt", "--config", str(cfg), "--out", "flag"])
    assert result.exit_code == 0, result.output
    assert CALLS[-1] == EchoConfig(inputs=[Path("x.txt"), Path("y.txt")], out=Path("flag"), mode="b")


def test_user_errors_are_one_line_and_nonzero(tmp_path):
    result = CliRunner().invoke(make_app(), ["echo", "x.txt", "--fail"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: no usable documents in x.txt"
    bad = CliRunner().invoke(make_app(), ["echo", "--mode", "z"])
    assert bad.exit_code == 2 and "must be one of a, b" in bad.output


def test_help_shows_defaults_and_examples():
    result = CliRunner().invoke(make_app(), ["echo", "--help"])
    assert result.exit_code == 0
    assert "(default: a)" in result.output and "genforge echo x" in result.output


def test_genforge_help_lists_stages():
    out = subprocess.run([sys.executable, "-m", "genforge.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "data" in out.stdout


def test_fields_a_command_sets_itself_are_not_flags():
    """A federated round sets the engine's --max-steps itself: offered as a flag it would be taken and do nothing."""
    @dataclass
    class RoundConfig(EchoConfig):
        cli_omitted = ("mode",)

    app = typer.Typer()
    add_stage_command(app, "echo", RoundConfig, run=f"{__name__}:echo_stage", help="Echo.")
    app.command("noop")(lambda: None)
    assert "--mode" not in CliRunner().invoke(app, ["echo", "--help"]).output
    assert CliRunner().invoke(app, ["echo", "x.txt", "--mode", "b"]).exit_code == 2
    from genforge.federated.config import FederatedClassifyConfig
    assert {"max_steps", "epochs"} <= set(FederatedClassifyConfig.cli_omitted)


def test_ctrl_c_tells_to_resume_only_a_command_that_can():
    @dataclass
    class ResumableConfig(EchoConfig):
        resume: bool = field(False, help="continue")

    app = typer.Typer()
    add_stage_command(app, "echo", EchoConfig, run=f"{__name__}:interrupted_stage", help="Echo.")
    add_stage_command(app, "again", ResumableConfig, run=f"{__name__}:interrupted_stage", help="Again.")
    plain, resumable = (CliRunner().invoke(app, [name, "x.txt"]) for name in ("echo", "again"))
    assert plain.exit_code == resumable.exit_code == 130
    assert "--resume" not in plain.output and "rerun the command to start over" in plain.output
    assert "rerun with --resume to continue" in resumable.output


def interrupted_stage(cfg):
    raise KeyboardInterrupt


def test_a_closed_pipe_ends_quietly():
    """`genforge feedback export ... | head -1`: the reader leaving is not an error to print."""
    app = typer.Typer()
    add_stage_command(app, "echo", EchoConfig, run=f"{__name__}:closed_pipe_stage", help="Echo.")
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["echo", "x.txt"])
    assert result.exit_code == 141 and "error" not in result.output


def closed_pipe_stage(cfg):
    raise BrokenPipeError(32, "Broken pipe")


def test_help_keeps_square_brackets():
    """--help is rendered as rich markup, which reads `[[text,label],...]` as a tag and drops it."""
    @dataclass
    class BracketConfig:
        data: Path = field(Path("d.json"), help="labelled file: JSON [[text,label],...]")

    app = typer.Typer(rich_markup_mode="rich")
    add_stage_command(app, "echo", BracketConfig, run=f"{__name__}:echo_stage", help="Echo.")
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["echo", "--help"], env={"COLUMNS": "200"})
    assert "JSON [[text,label],...]" in result.output


def test_a_flag_that_has_no_effect_is_one_line_and_nonzero(tmp_path):
    """`--adv-epsilon` without `--adversarial` (and `--augment-ratio` without `--augment-attack`) trained a
    plain model without a word."""
    from genforge.cli import app

    common = ["finetune", "classify", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "d.csv"),
              "--out", str(tmp_path / "o")]
    for flags, message in [(["--adv-epsilon", "0.5"], "--adv-epsilon has no effect without --adversarial "
                                                      "fgm|pgd|freelb|vat"),
                           (["--augment-ratio", "2"], "--augment-ratio has no effect without --augment-attack "
                                                      "charswap|homoglyph|invisible|synonym|pinyin")]:
        result = CliRunner().invoke(app, common + flags)
        assert result.exit_code == 2 and result.output == f"error: {message}\n"
    assert not (tmp_path / "o").exists()
