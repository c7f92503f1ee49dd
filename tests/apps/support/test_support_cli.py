"""`genforge app support ...` on the command line and `eval`: one-line errors, tickets, the eval report."""

import json

from typer.testing import CliRunner

from genforge.apps.support.config import SupportEvalConfig
from genforge.apps.support.evaluate import evaluate, ranking_metrics
from genforge.cli import app

runner = CliRunner()


def _fails(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    _fails(["app", "support", "build", "--out", str(tmp_path / "o")], "give the knowledge base")
    _fails(["app", "support", "build", "--kb", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")],
           "knowledge-base path not found")
    _fails(["app", "support", "build", "--kb", "x.csv", "--out", "o", "--overlap", "900"], "--overlap must be")
    _fails(["app", "support", "eval", "--assistant", str(tmp_path), "--data", str(tmp_path / "q.csv")],
           "q.csv does not exist")
    (tmp_path / "q.csv").write_text("text,label\nhello,x\n", encoding="utf-8")
    _fails(["app", "support", "eval", "--assistant", str(tmp_path), "--data", str(tmp_path / "q.csv")],
           "not a support assistant")
    _fails(["app", "support", "tickets", "--db", f"sqlite:///{tmp_path / 'db.sqlite'}", "--close", "7"],
           "no open ticket #7")


def test_tickets_command_lists_the_database(tmp_path):
    result = runner.invoke(app, ["app", "support", "tickets", "--db", f"sqlite:///{tmp_path / 'db.sqlite'}",
                                 "--status", "all"])
    assert result.exit_code == 0 and "support tickets (all)" in result.output


def test_ranking_metrics():
    m = ranking_metrics([1, 2, None, 5])
    assert m["hit@1"] == 0.25 and m["hit@5"] == 0.75
    assert abs(m["mrr@10"] - (1 + 0.5 + 0.2) / 4) < 1e-9
    assert abs(m["ndcg@10"] - (1 + 1 / 1.5849625007 + 1 / 2.5849625007) / 4) < 1e-6


def test_eval_reports_retrieval_answers_handoff_and_latency(served_dir, company, tmp_path):
    report = evaluate(SupportEvalConfig(assistant=served_dir, data=company / "val.csv", out=tmp_path / "eval",
                                        max_new_tokens=4, threads=1))
    assert report["inscope"] == 4 and report["oos"] == 4
    assert report["hit@1"] <= report["hit@5"] and report["hit@5"] >= 0.75
    assert 0 <= report["answer_accuracy"] <= report["hit@1"]  # an answer is right only if its entry is
    assert report["handoff_recall"] > 0 and set(report["latency"]) <= {"faq", "generate", "handoff"}
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved["hit@1"] == report["hit@1"]
    rows = (tmp_path / "eval" / "results.jsonl").read_text().splitlines()
    assert len(rows) == 8 and {"action", "entry", "seconds"} <= set(json.loads(rows[0]))


def test_eval_shows_its_progress_over_the_questions(served_dir, company, capsys):
    """Each question is answered one at a time (generation included): minutes on a real test set, silently."""
    evaluate(SupportEvalConfig(assistant=served_dir, data=company / "val.csv", limit=2, max_new_tokens=2, threads=1))
    assert "answering: 100%" in capsys.readouterr().err


def test_calibrate_recalibrates_a_built_assistant_without_retraining(assistant_dir, company, tmp_path):
    import shutil

    folder = tmp_path / "support"
    shutil.copytree(assistant_dir, folder)
    before = (folder / "intent" / "model.safetensors").stat().st_mtime_ns
    result = runner.invoke(app, ["app", "support", "calibrate", "--assistant", str(folder), "--val",
                                 str(company / "val.csv"), "--min-inscope-accuracy", "0.5"])
    assert result.exit_code == 0, result.output
    record = json.loads((folder / "calibrate.json").read_text())
    calibration = json.loads((folder / "calibration.json").read_text())
    assert record["stage"] == "app.support.calibrate" and record["thresholds"] == calibration["thresholds"]
    assert json.loads((folder / "support.json").read_text())["thresholds"] == calibration["thresholds"]
    assert {"intent", "oos", "faq", "handoff_confidence"} == set(calibration["thresholds"])
    assert calibration["target_inscope_accuracy"] <= 0.5 and calibration["retrieval_accuracy"] is not None
    assert (folder / "intent" / "model.safetensors").stat().st_mtime_ns == before
    _fails(["app", "support", "calibrate", "--assistant", str(folder)], "give --assistant DIR and --val FILE")


def test_ask_answers_a_conversation_in_the_terminal(served_dir, tmp_path):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    result = runner.invoke(app, ["app", "support", "ask", "--assistant", str(served_dir), "--db", db,
                                 "How long does delivery take?", "what is the weather on Mars"])
    assert result.exit_code == 0, result.output
    assert "Standard delivery takes 3 to 5 business days." in result.output and "[faq" in result.output
    assert "ticket #1" in result.output and "[handoff" in result.output
    listed = runner.invoke(app, ["app", "support", "tickets", "--db", db])
    assert listed.exit_code == 0 and "Mars" in listed.output and "0.450" in listed.output


def test_the_recipe_resolves_every_step():
    import dataclasses
    from pathlib import Path

    from genforge.config import from_dict, read_yaml
    from genforge.recipes import STAGES, _load, _parse_steps

    recipe = Path(__file__).resolve().parents[3] / "recipes" / "support.yaml"
    steps = _parse_steps(read_yaml(recipe), recipe)
    assert [stage for _, stage, _ in steps] == ["app.support.from_bitext", "app.support.build", "app.support.eval",
                                                "app.support.serve"]
    for _, stage, values in steps:
        cls = _load(STAGES[stage].config)
        values = {**dict.fromkeys(STAGES[stage].consumes, "runs/support/assistant"), **values}
        if "out" in {f.name for f in dataclasses.fields(cls)}:
            values.setdefault("out", "runs/support/x")
        from_dict(cls, values)  # a typo'd key or a bad value raises ConfigError
