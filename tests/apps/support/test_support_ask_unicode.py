"""`genforge app support ask` with a question that is not UTF-8 (its bytes kept as surrogate escapes in argv)."""

from typer.testing import CliRunner

from genforge.cli import app


def test_question_that_is_not_utf8_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(app, ["app", "support", "ask", "--assistant", str(tmp_path), "fine",
                                      "\udcff bad"])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == "error: the question is not UTF-8 text (byte 0xff); set the terminal (or the " \
                                    "config file) to UTF-8"
