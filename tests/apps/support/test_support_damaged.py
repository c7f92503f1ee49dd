"""Bad input to the support commands is refused in one line: a damaged assistant folder, calibration or test
questions labelled with ids the knowledge base does not have, a vocabulary below the byte alphabet, an empty
question."""

import shutil

import pytest
from typer.testing import CliRunner

from genforge.cli import app

runner = CliRunner()


def _fails(args: list[str], *messages: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert all(m in result.output for m in messages) and "Traceback" not in result.output, result.output
    return result.output


@pytest.mark.parametrize("name,content", [("support.json", "{\"encoder\": "), ("support.json", "[]"),
                                          ("index/passages.jsonl", "{\"id\": 0}\n"), ("index/dense.faiss", "junk"),
                                          ("index/dense.faiss", None)])
def test_a_damaged_assistant_folder_is_one_line_naming_the_file(assistant_dir, tmp_path, name, content):
    folder = tmp_path / "support"
    shutil.copytree(assistant_dir, folder, ignore=shutil.ignore_patterns("chat", "work"))
    if content is None:
        (folder / name).unlink()
    else:
        (folder / name).write_text(content, encoding="utf-8")
    _fails(["app", "support", "ask", "--assistant", str(folder), "--db", f"sqlite:///{tmp_path / 'db.sqlite'}",
            "How do I get a refund?"], str(folder / name), "genforge app support build")


def test_questions_labelled_with_unknown_ids_are_refused(assistant_dir, company, tmp_path):
    bad = tmp_path / "val.csv"
    bad.write_text("text,label\nwhere is my parcel,shiping\nhow do I get a refund,refund\nhi,Refund\n",
                   encoding="utf-8")
    message = "'Refund', 'shiping' are neither FAQ ids of the knowledge base nor 'oos'"
    _fails(["app", "support", "build", "--kb", str(company / "faq.csv"), "--val", str(bad), "--out",
            str(tmp_path / "o")], message)
    meta = (assistant_dir / "support.json").read_bytes()
    _fails(["app", "support", "calibrate", "--assistant", str(assistant_dir), "--val", str(bad)], message)
    assert (assistant_dir / "support.json").read_bytes() == meta  # refused before any threshold changed
    _fails(["app", "support", "eval", "--assistant", str(assistant_dir), "--data", str(bad)], message)


def test_a_vocabulary_below_the_byte_alphabet_and_an_empty_question_are_refused(assistant_dir, company, tmp_path):
    _fails(["app", "support", "build", "--kb", str(company / "faq.csv"), "--history", str(company / "history.jsonl"),
            "--vocab-size", "10", "--out", str(tmp_path / "o")], "--vocab-size must be at least 262")
    assert not (tmp_path / "o").exists()
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    _fails(["app", "support", "ask", "--assistant", str(assistant_dir), "--db", db, ""], "a question is empty")
    _fails(["app", "support", "ask", "--assistant", str(assistant_dir), "--db", db, "hello", "  "],
           "a question is empty")
    assert not (tmp_path / "db.sqlite").exists()  # refused before a session or a ticket was opened


def test_a_damaged_encoder_folder_is_one_line(bert_dir, tmp_path):
    from genforge.apps.support.index import load_encoder
    from genforge.errors import ArtifactError

    encoder = tmp_path / "encoder"
    shutil.copytree(bert_dir, encoder)
    assert load_encoder(encoder)(["a refund"]).shape[0] == 1
    weights = encoder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match="model.safetensors is corrupt") as info:
        load_encoder(encoder)
    assert "\n" not in str(info.value)
