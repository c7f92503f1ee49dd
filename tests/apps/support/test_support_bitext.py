"""`genforge app support from-bitext` on a tiny copy of the shared layout, and its one-line errors on a
Bitext CSV without the expected columns or a damaged CLINC150 file."""

import csv
import json

import pytest
from typer.testing import CliRunner

from genforge.apps.support.bitext import BITEXT, CLINC
from genforge.cli import app

REPLIES = {"cancel_order": "I can help you cancel the order.\r\nOpen Orders.",
           "track_order": "Your order is on its way: see Orders."}


def shared_layout(root, columns=("instruction", "intent", "response"), clinc=None):
    (root / BITEXT).parent.mkdir(parents=True)
    with open(root / BITEXT, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for intent, reply in REPLIES.items():
            writer.writerows((f"please {intent.replace('_', ' ')} number {i}", intent, reply)[:len(columns)]
                             for i in range(20))
    (root / CLINC).parent.mkdir(parents=True)
    oos = {split: [[f"{split} question {i}", "oos"] for i in range(3)] for split in ("oos_train", "oos_val", "oos_test")}
    (root / CLINC).write_text(json.dumps(oos) if clinc is None else clinc, encoding="utf-8")
    return root


def test_from_bitext_writes_the_faq_history_and_questions(tmp_path):
    data = shared_layout(tmp_path / "shared")
    result = CliRunner().invoke(app, ["app", "support", "from-bitext", "--data", str(data), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "o" / "faq.csv", encoding="utf-8", newline="") as f:
        faq = list(csv.DictReader(f))
    assert {r["id"] for r in faq} == set(REPLIES) and "I can help you cancel the order.\nOpen Orders." in \
        {r["answer"] for r in faq}
    history = (tmp_path / "o" / "history.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(history) == len(faq) and json.loads(history[0])["messages"][0]["role"] == "user"
    assert (tmp_path / "o" / "oos.csv").read_text(encoding="utf-8").count("oos_train question") == 3


@pytest.mark.parametrize("layout,message", [
    ({"columns": ("instruction", "category", "response")}, "lacks the column(s) intent"),
    ({"clinc": "{\"oos_train\": [["}, "data_full.json is corrupt"),
    ({"clinc": "{\"oos_train\": []}"}, "data_full.json is corrupt (no 'oos_val' in it)"),
    ({"clinc": "{\"oos_train\": [\"a\"], \"oos_val\": [], \"oos_test\": []}"}, "data_full.json is corrupt"),
])
def test_wrong_columns_or_a_damaged_clinc_file_is_one_line(tmp_path, layout, message):
    data = shared_layout(tmp_path / "shared", **layout)
    result = CliRunner().invoke(app, ["app", "support", "from-bitext", "--data", str(data), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "o").exists()  # refused before the output folder was made
