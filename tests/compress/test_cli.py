"""`genforge compress` end to end through the real app (in-process), the printed report, one-line errors."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from genforge.artifacts import read_manifest
from genforge.cli import app
from genforge.compress.report import build_report, change, rows
from genforge.recipes import STAGES


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_compress_cli_then_generate_and_predict(tmp_path, lm_dir, packed, classifier_dir):
    out = tmp_path / "lm"
    result = run("compress", "--model", lm_dir, "--method", "int8", "--out", out, "--eval-data", packed,
                 "--measure-steps", 4, "--eval-batches", 2, "--seq-len", 64, "--threads", 1)
    assert result.exit_code == 0, result.output
    assert "perplexity" in result.output and "compressed / original" in result.output
    result = run("generate", "--model", out, "--prompt", "ROMEO:", "--max-new-tokens", 5, "--temperature", 0)
    assert result.exit_code == 0, result.output

    out = tmp_path / "cls"
    result = run("compress", "--model", classifier_dir, "--method", "int4", "--group-size", 32, "--out", out,
                 "--measure-steps", 4, "--threads", 1)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert "accuracy" not in report["compressed"]  # no --eval-data: speed and size only
    result = run("predict", "--model", out, "--text", "profits rose sharply")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1].split("\t")[0] in ("negative", "positive")


@pytest.mark.parametrize("args,message", [
    (["--method", "int8"], "is not a folder"),
    (["--method", "zip"], "must be one of"),
    (["--method", "distill"], "distill trains the student on --data"),
    (["--method", "prune", "--importance", "wanda"], "--importance wanda measures activations"),
    (["--method", "prune", "--sparsity", "1.5"], "--sparsity must be in (0, 1)"),
    (["--method", "prune-structured", "--ffn-fraction", "0"], "needs --ffn-fraction or --heads-fraction"),
    (["--method", "int8", "--threads", "100000"], "--threads must be <="),
    (["--method", "prune", "--adversarial", "fgm"], "--adversarial does not apply to compress"),
    (["--method", "distill", "--data", "d", "--hidden-size", "64"], "--hidden-size sizes a custom student"),
    (["--method", "distill", "--data", "d", "--student-preset", "small", "--num-layers", "2"],
     "--num-layers sizes a custom student (--method distill --student-preset custom); 'small' has a fixed size"),
    (["--method", "distill", "--data", "d", "--student-preset", "custom"],
     "--student-preset custom needs at least one of --hidden-size"),
    (["--method", "distill", "--data", "d", "--student-preset", "tiny", "--student-layers", "2"], "give one"),
    (["--method", "int8", "--student-layers", "2"], "--student-layers applies to --method distill"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    result = run("compress", "--model", tmp_path / "missing", "--out", tmp_path / "out", *args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output


def test_data_of_the_wrong_kind_is_one_line(tmp_path, lm_dir, classifier_dir, packed, sentiment_csv):
    result = run("compress", "--model", lm_dir, "--method", "int8", "--out", tmp_path / "a", "--eval-data", sentiment_csv)
    assert result.exit_code == 2 and "needs a packed data folder" in result.output
    result = run("compress", "--model", classifier_dir, "--method", "int8", "--out", tmp_path / "b", "--eval-data", packed)
    assert result.exit_code == 2 and "needs a labelled file" in result.output
    result = run("compress", "--model", lm_dir, "--method", "int8", "--out", lm_dir)
    assert result.exit_code == 2 and "must not be the --model folder" in result.output


def test_a_quantised_model_is_not_quantised_again(tmp_path, lm_dir):
    first = tmp_path / "int8"
    assert run("compress", "--model", lm_dir, "--method", "int8", "--out", first, "--measure-steps", 2).exit_code == 0
    result = run("compress", "--model", first, "--method", "int4", "--out", tmp_path / "again")
    assert result.exit_code == 2 and "already compressed (quantized)" in result.output


def test_report_ratios_and_rows():
    original = {"params": 100, "size_bytes": 4_000_000, "latency_ms_p50": 10.0, "throughput": 50.0,
                "throughput_unit": "tokens/s", "perplexity": 20.0}
    compressed = {**original, "size_bytes": 1_000_000, "latency_ms_p50": 4.0, "throughput": 125.0, "perplexity": 20.2}
    assert change(original, compressed)["speedup_p50"] == 2.5
    report = build_report("int8", {"kind": "clm"}, original, compressed)
    assert report["change"]["size_bytes"] == 0.25 and report["machine"]["threads"] >= 1
    table = {label: (a, b, note) for label, a, b, note in rows(report)}
    assert table["size on disk (MB)"] == ("4.00", "1.00", "x0.250")
    assert "2.50x faster" in table["latency p50, batch 1 (ms)"][2]


def test_recipes_know_the_compress_stage():
    stage = STAGES["compress"]
    assert stage.consumes == {"model": "model", "eval_data": "data"} and stage.produces == "model"


def test_data_of_another_tokenizer_is_refused_before_the_output_is_touched(tmp_path, lm_dir, packed, repack):
    """Data packed by another tokenizer of the same size passes the vocabulary size check, yet would train the
    wrong ids and score nonsense; it is refused before an earlier run in --out is unmade."""
    out = tmp_path / "int8"
    assert run("compress", "--model", lm_dir, "--method", "int8", "--out", out, "--measure-steps", 2).exit_code == 0
    finished = read_manifest(out, "compress")
    other = repack(packed)
    for flag in ("--eval-data", "--data"):
        result = run("compress", "--model", lm_dir, "--method", "int8", "--out", out, flag, other)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: model {lm_dir} has a different tokenizer"), lines
    assert read_manifest(out, "compress") == finished


def test_a_compress_run_is_redone_in_its_own_folder_only(tmp_path, lm_dir, packed):
    """As pretrain and finetune: rerunning into the run's own --out redoes it; another command's artifact there
    is refused, naming compress as what this command writes."""
    out = tmp_path / "pruned"
    args = ("--model", lm_dir, "--method", "prune", "--sparsity", 0.3, "--data", packed, "--max-steps", 2,
            "--measure-steps", 2, "--eval-batches", 1, "--seq-len", 32, "--batch-size", 4, "--threads", 1)
    for _ in range(2):
        result = run("compress", *args, "--out", out)
        assert result.exit_code == 0, result.output
    assert read_manifest(out, "compress")["metrics"]["params"]
    pretrained = shutil.copytree(lm_dir, tmp_path / "pretrained")
    result = run("compress", *args, "--out", pretrained)
    assert result.exit_code == 2
    assert "holds a finished pretrain artifact" in result.output and "this command writes compress" in result.output


def test_classifier_data_is_checked_before_any_training(tmp_path, classifier_dir, sentiment_csv):
    """A labelled file with a label the classifier lacks, or without the label column, used to fail only after the
    pruning, the recovery training and the save; it is refused first, in one line, and --out stays untouched."""
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("text,label\nprofits rose,positive\nshares fell,neutral\n", encoding="utf-8")
    no_label = tmp_path / "nolabel.csv"
    no_label.write_text("text,sentiment\nprofits rose,positive\n", encoding="utf-8")
    cases = [(unknown, "labels the classifier does not know: ['neutral']"), (no_label, "label"),
             (tmp_path / "missing.csv", "--eval-data " + str(tmp_path / "missing.csv") + " does not exist")]
    for eval_data, message in cases:
        out = tmp_path / "out"
        result = run("compress", "--model", classifier_dir, "--method", "prune", "--data", sentiment_csv,
                     "--max-steps", 2, "--batch-size", 8, "--threads", 1, "--out", out, "--eval-data", eval_data)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output
        assert not out.exists()


def test_a_rerun_with_another_kind_of_model_leaves_nothing_of_the_first(tmp_path, lm_dir, classifier_dir):
    """A classifier's classifier.json stayed in --out when a language model was compressed there next, so the new
    folder loaded as a classifier and the run failed after its work, leaving a broken folder."""
    from genforge.models.load import load_model

    out = tmp_path / "out"
    for model in (classifier_dir, lm_dir):
        result = run("compress", "--model", model, "--method", "int8", "--out", out, "--measure-steps", 2,
                     "--threads", 1)
        assert result.exit_code == 0, result.output
    assert not (out / "classifier.json").exists()
    assert type(load_model(out)[0]).__name__ == "LlamaForCausalLM"
