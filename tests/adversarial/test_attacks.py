"""The attack suite: units and edits, budgets, determinism, the meaning constraint, the report and the CLI."""

import json
import random

import pytest
from pypinyin import lazy_pinyin
from typer.testing import CliRunner

from genforge.adversarial.attacks import Budget, Victim, attack_example, build_recipe, random_edit
from genforge.adversarial.neighbours import load_encoder
from genforge.adversarial.transforms import (
    INVISIBLE,
    STOPWORDS,
    edit_distance,
    invisible_edits,
    lookalike_edits,
    pinyin_edits,
    render,
    typo_edits,
    units,
)
from genforge.artifacts import read_manifest
from genforge.cli import app
from genforge.errors import ConfigError
from genforge.finetune.classifier import load_classifier


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_units_and_render():
    text = "Profits rose 5% — 利润大涨, didn't they?"
    spans = units(text)
    assert [text[s:e] for s, e in spans] == ["Profits", "rose", "5", "利", "润", "大", "涨", "didn't", "they"]
    assert render(text, spans, {}) == text
    assert render(text, spans, {0: "Gains", 4: "", 7: "did"}) == "Gains rose 5% — 利大涨, did they?"
    assert edit_distance("kitten", "sitting") == 3 and edit_distance("", "ab") == 2


def test_character_edits_are_small_and_seeded():
    for word in ("profits", "Shares", "up"):
        edits = typo_edits(word, random.Random(1))
        assert edits == typo_edits(word, random.Random(1)) and edits
        assert all(e != word and edit_distance(e, word) <= 2 for e in edits)
    assert typo_edits("利", random.Random(0)) == [] and typo_edits("2024", random.Random(0)) == []
    homoglyph, fullwidth = lookalike_edits("shares", random.Random(0))
    for edit in (homoglyph, fullwidth):
        assert len(edit) == 6 and sum(a != b for a, b in zip(edit, "shares", strict=True)) == 1
    assert any("\uff01" <= ch <= "\uff5e" for ch in fullwidth) and all(ord(ch) < 0xFF00 for ch in homoglyph)
    for edit in invisible_edits("shares", random.Random(0)):
        assert len(edit) == 7 and "".join(ch for ch in edit if ch not in INVISIBLE) == "shares"


def test_pinyin_edits_sound_the_same():
    *chars, spelled = pinyin_edits("好", random.Random(0), count=5)
    assert spelled == "hao" and len(chars) == 4  # the Latin spelling takes one of the 5
    assert all(c != "好" and lazy_pinyin(c) == ["hao"] for c in chars)
    assert set(pinyin_edits("好", random.Random(0), count=5, allowed=frozenset("好号浩天"))) == {"号", "浩", "hao"}
    assert pinyin_edits("a", random.Random(0), count=5) == []


@pytest.mark.parametrize("count", [1, 2, 3, 12])
def test_pinyin_edits_try_at_most_count_substitutes(count):
    """--candidates N is every substitute tried per unit: the Latin spelling was an (N+1)-th."""
    for unit in "好是的中国人":
        edits = pinyin_edits(unit, random.Random(0), count=count)
        assert 0 < len(edits) <= count and edits[-1] == lazy_pinyin(unit)[0]


def test_victim_counts_distinct_queries(classifier_dir):
    model, tokenizer, info = load_classifier(classifier_dir)
    victim = Victim(model, tokenizer, info["seq_len"])
    probs = victim.probs(["profits rose", "profits fell", "profits rose"])
    assert victim.queries == 2 and probs.shape == (3, 2) and (probs[0] == probs[2]).all()
    victim.probs(["profits fell"])
    assert victim.queries == 2


def test_character_attacks_respect_budgets_and_are_deterministic(classifier_dir, labelled):
    model, tokenizer, info = load_classifier(classifier_dir)
    victim = Victim(model, tokenizer, info["seq_len"])
    budget = Budget(max_queries=20, max_ratio=0.5, seed=3)
    statuses = []
    for name in ("charswap", "homoglyph", "invisible"):
        recipe = build_recipe(name, budget)
        first = [attack_example(t, y, victim, recipe, budget) for t, y in labelled]
        # the same seed gives the same attacks, whatever the order of the examples
        assert first == [attack_example(t, y, victim, recipe, budget) for t, y in reversed(labelled)][::-1]
        for r in first:
            assert 1 <= r.queries <= 20 and r.units_changed <= max(1, int(0.5 * r.units))
            assert {"skipped": r.prediction != r.label and r.adversarial == r.text,
                    "succeeded": r.prediction != r.label and r.adversarial != r.text,
                    "failed": r.prediction == r.label}[r.status]
            statuses.append(r.status)
    assert "succeeded" in statuses and "failed" in statuses


def test_synonym_attack_keeps_meaning(classifier_dir, labelled, minilm_dir):
    model, tokenizer, info = load_classifier(classifier_dir)
    victim = Victim(model, tokenizer, info["seq_len"])
    budget = Budget(max_queries=60, max_ratio=0.5, min_similarity=0.75, candidates=6)
    recipe = build_recipe("synonym", budget, encoder=minilm_dir)
    substitutes = recipe.edits("Profits", random.Random(0))
    assert substitutes and all(s[0].isupper() and s.lower() not in STOPWORDS for s in substitutes)
    assert recipe.edits("the", random.Random(0)) == [] and recipe.edits("xqzv", random.Random(0)) == []
    encoder = load_encoder(minilm_dir)
    changed = 0
    for text, label in labelled:
        r = attack_example(text, label, victim, recipe, budget)
        assert r.queries <= 60 and len(units(r.adversarial)) == len(units(text))
        if r.units_changed:
            changed += 1
            assert encoder.similarity(text, [r.adversarial])[0] >= 0.75 - 1e-4
    assert changed
    with pytest.raises(ConfigError, match="needs a sentence encoder"):
        build_recipe("synonym", budget, encoder=None)


def test_random_edit_is_seeded():
    recipe, budget = build_recipe("charswap", Budget(max_ratio=0.5, seed=1)), Budget(max_ratio=0.5, seed=1)
    text = "shares dropped after weak results"
    copy = random_edit(text, recipe, budget)
    assert copy != text and copy == random_edit(text, recipe, budget)
    assert 1 <= sum(a != b for a, b in zip(text.split(), copy.split(), strict=True)) <= 2


def test_robustness_eval_report(tmp_path, classifier_dir, sentiment_csv):
    out = tmp_path / "report"
    result = run("robustness", "eval", "--model", classifier_dir, "--data", sentiment_csv, "--out", out,
                 "--attack", "charswap", "--attack", "invisible", "--attack", "pinyin",
                 "--max-examples", 12, "--max-queries", 30, "--seed", 5)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["examples"] == 12 and 0 <= report["clean_accuracy"] <= 1
    assert list(report["attacks"]) == ["charswap", "invisible", "pinyin"]
    for name, a in report["attacks"].items():
        assert 0 <= a["accuracy"] <= report["clean_accuracy"] and 0 <= a["success_rate"] <= 1
        assert a["avg_queries"] <= 30 and len(a["examples"]) == min(5, a["succeeded"])
        assert all(e["adversarial"] != e["text"] and e["prediction"] != e["label"] for e in a["examples"])
        rows = (out / f"adversarial_{name}.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(rows) == 12 and {"text", "adversarial", "status", "queries"} <= set(json.loads(rows[0]))
    # English texts have no Chinese characters: the pinyin attack finds nothing to change
    assert report["attacks"]["pinyin"]["succeeded"] == 0 and report["attacks"]["charswap"]["succeeded"] > 0
    assert (out / "robustness.png").stat().st_size > 0
    manifest = read_manifest(out, "robustness")
    assert manifest["parent"]["stage"] == "finetune" and manifest["metrics"]["examples"] == 12
    again = tmp_path / "again"
    run("robustness", "eval", "--model", classifier_dir, "--data", sentiment_csv, "--out", again,
        "--attack", "charswap", "--max-examples", 12, "--max-queries", 30, "--seed", 5)
    assert json.loads((again / "report.json").read_text())["attacks"]["charswap"] == report["attacks"]["charswap"] | {
        "seconds": json.loads((again / "report.json").read_text())["attacks"]["charswap"]["seconds"]}


def test_pinyin_attack_on_chinese(tmp_path, classifier_dir):
    data = tmp_path / "zh.csv"
    data.write_text("text,label\n这家酒店服务很好，房间干净,positive\n早餐难吃，房间很吵,negative\n"
                    "位置方便，价格便宜,positive\n", encoding="utf-8")
    result = run("robustness", "eval", "--model", classifier_dir, "--data", data, "--out", tmp_path / "zh",
                 "--attack", "pinyin", "--max-queries", 40, "--max-ratio", 0.3)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "zh" / "adversarial_pinyin.jsonl").read_text().splitlines()]
    for row in rows:
        assert row["units_changed"] <= max(1, int(0.3 * row["units"])) and row["queries"] <= 40
        changed = [(a, b) for a, b in zip(row["text"], row["adversarial"], strict=False) if a != b]
        assert all(lazy_pinyin(a) == lazy_pinyin(b) for a, b in changed if len(row["text"]) == len(row["adversarial"]))


def test_bad_input_is_one_line(tmp_path, bert_dir, classifier_dir, sentiment_csv):
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("text,label\nprofits rose,bullish\n", encoding="utf-8")
    cases = [
        (["--model", bert_dir, "--data", sentiment_csv], "no classifier.json"),
        (["--model", classifier_dir, "--data", unknown], "labels the classifier does not know: ['bullish']"),
        (["--model", classifier_dir, "--data", sentiment_csv, "--max-ratio", 0], "--max-ratio must be in (0, 1]"),
        (["--model", classifier_dir, "--data", sentiment_csv, "--attack", "leet"], "must be one of charswap"),
        (["--model", classifier_dir, "--data", tmp_path / "nope.csv"], "nope.csv does not exist"),
    ]
    for args, message in cases:
        result = run("robustness", "eval", *args, "--out", tmp_path / "out")
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
