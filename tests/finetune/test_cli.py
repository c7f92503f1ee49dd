"""End to end through the real `genforge` app (in-process): classify -> predict, and one-line errors."""

import json

from typer.testing import CliRunner

from genforge.cli import app


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_classify_then_predict(tmp_path, bert_dir, sentiment_csv):
    out = tmp_path / "cls"
    result = run("finetune", "classify", "--model", bert_dir, "--data", sentiment_csv, "--out", out, "--max-steps", 3,
                 "--batch-size", 8, "--seq-len", 32, "--eval-every", 0, "--no-bf16", "--head", "transformer",
                 "--epochs", 0.4)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert metrics["steps"] == round(0.4 * metrics["train_examples"] / 8)  # --epochs overrides --max-steps

    result = run("predict", "--model", out, "--text", "profits rose sharply")
    assert result.exit_code == 0, result.output
    label, probs = result.stdout.strip().splitlines()[-1].split("\t")
    assert label in ("negative", "positive") and f"{label}=" in probs

    texts = tmp_path / "news.txt"
    texts.write_text("shares jumped\n\nlosses widened\n")
    result = run("predict", "--model", out, "--data", texts, "--out", tmp_path / "preds.jsonl")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["shares jumped", "losses widened"]
    assert all(set(r["probs"]) == {"negative", "positive"} and abs(sum(r["probs"].values()) - 1) < 1e-4
               for r in rows)
    assert all(r["label"] == max(r["probs"], key=r["probs"].get) for r in rows)


def test_bad_input_is_one_line(tmp_path, bert_dir, sentiment_csv):
    cases = [
        (["finetune", "classify", "--model", bert_dir, "--data", sentiment_csv, "--out", tmp_path / "a",
          "--label-field", "sentiment"], "no field 'sentiment'"),
        (["finetune", "classify", "--model", tmp_path / "nope", "--data", sentiment_csv, "--out", tmp_path / "b"],
         "is not a folder"),
        (["finetune", "classify", "--model", bert_dir, "--data", sentiment_csv, "--out", tmp_path / "c",
          "--head", "cnn"], "must be one of linear, lstm, transformer"),
        (["finetune", "classify", "--model", bert_dir, "--data", sentiment_csv, "--out", tmp_path / "d",
          "--seq-len", 1000], "--seq-len 1000 is longer than the 256 positions"),
        (["predict", "--model", bert_dir, "--text", "x"], "no classifier.json"),
        (["predict", "--model", bert_dir, "--text", "x", "--out", tmp_path], f"output {tmp_path} is a folder"),
        (["finetune", "classify", "--model", bert_dir, "--data", tmp_path, "--out", tmp_path / "e"],
         f"data file {tmp_path} is a folder, expected a file"),
        (["chat", "--model", bert_dir], "not a causal language model"),
    ]
    for args, message in cases:
        result = run(*args)
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_sft_names_only_the_formats_it_reads(tmp_path, llama_dir):
    data = tmp_path / "x.txt"
    data.write_text("hello\n")
    result = run("finetune", "sft", "--model", llama_dir, "--data", data, "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {data}: unsupported format '.txt'; use .jsonl or .json"


def test_sft_merge_then_chat_and_generate(tmp_path, llama_dir, jsonl):
    data = jsonl("dialogues.jsonl", [{"conversations": [{"from": "human", "value": f"hello {i}"},
                                                        {"from": "gpt", "value": f"hi {i}!"}]} for i in range(30)])
    out = tmp_path / "chat"
    result = run("finetune", "sft", "--model", llama_dir, "--data", data, "--out", out, "--max-steps", 2,
                 "--batch-size", 4, "--seq-len", 32, "--eval-every", 0, "--no-bf16", "--lora-r", 2, "--merge")
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()

    result = CliRunner().invoke(app, ["chat", "--model", str(out), "--max-new-tokens", "3", "--temperature", "0"],
                                input="hello 3\n/reset\nhello 4\n/exit\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("assistant> ") == 2 and "(conversation reset)" in result.stdout

    result = run("generate", "--model", out, "--chat", "--prompt", "hello 5", "--max-new-tokens", 3,
                 "--temperature", 0)
    assert result.exit_code == 0, result.output
