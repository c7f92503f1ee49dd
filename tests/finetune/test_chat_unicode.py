"""`genforge chat` given input that is not UTF-8: a one-line error and exit 2, never a tokenizer TypeError."""

import pytest
from typer.testing import CliRunner

from genforge.cli import app
from genforge.errors import DataError
from genforge.finetune.chat import chat_loop, load_chat_decoder
from genforge.finetune.config import ChatConfig


def test_stdin_that_is_not_utf8_is_a_one_line_error_after_the_good_lines(llama_dir):
    result = CliRunner().invoke(app, ["chat", "--model", str(llama_dir), "--max-new-tokens", "2"],
                                input=b"hello\n\xff\xfe\xe9\n")
    assert result.exit_code == 2, result.output
    error = result.output.splitlines()[-1]
    assert error.startswith("error: your message is not UTF-8 text (byte 0xff)") and "Traceback" not in result.output
    assert result.output.count("assistant> ") == 1  # the good line before it was answered


def test_escaped_bytes_are_refused_before_the_tokenizer(llama_dir):
    """Under a C locale (and in argv) Python keeps bytes that are not UTF-8 as surrogate escapes."""
    cfg = ChatConfig(model=llama_dir, max_new_tokens=2, temperature=0)
    with pytest.raises(DataError, match=r"not UTF-8 text \(byte 0xe9\)"):
        chat_loop(load_chat_decoder(llama_dir), cfg, ["caf\udce9"], lambda _: None)
