"""`genforge generate` end to end through the real CLI app, and its one-line errors."""

import json
import shutil

import pytest
from transformers import BertConfig, BertForMaskedLM
from typer.testing import CliRunner

from genforge.cli import app
from genforge.generate import generate


def invoke(*args):
    return CliRunner().invoke(app, ["generate", *map(str, args)])


def test_single_prompt_streams_the_greedy_completion(llama_dir):
    result = invoke("--model", llama_dir, "--prompt", "First Citizen:", "--temperature", 0, "--max-new-tokens", 12)
    assert result.exit_code == 0, result.output
    expected = generate(llama_dir, "First Citizen:", temperature=0, max_new_tokens=12)[0]
    assert result.stdout == expected + "\n"
    assert "12 tokens" in result.stderr and "fast backend" in result.stderr


def test_prompts_file_to_jsonl_with_stop_and_seed(llama_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in ["To be", "春眠", "a b c"]) + "\n",
                       encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ["--model", llama_dir, "--prompts", prompts, "--out", out, "--seed", 5, "--top-k", 40,
            "--max-new-tokens", 10, "--batch-size", 2, "--stop", "e", "--stop", "的"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in records] == ["To be", "春眠", "a b c"]
    assert all("e" not in r["completion"] and "的" not in r["completion"] for r in records)
    assert {r["finish_reason"] for r in records} <= {"eos", "length", "stop"}
    assert invoke(*args).exit_code == 0
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == records


def test_prompts_printed_per_prompt_and_chat(llama_dir, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\nworld\n", encoding="utf-8")
    result = invoke("--model", llama_dir, "--prompts", prompts, "--chat", "--temperature", 0,
                    "--max-new-tokens", 4, "--backend", "hf")
    assert result.exit_code == 0, result.output
    assert "[1] hello" in result.stdout and "[2] world" in result.stdout
    assert "hf" in result.stderr


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("args, message", [
    (["--model", "{tmp}/missing", "--prompt", "a"], "is not a folder"),
    (["--model", "{bert}", "--prompt", "a"], "not a causal language model (BertForMaskedLM)"),
    (["--model", "{llama}", "--prompts", "{tmp}/empty.txt"], "holds no prompts"),
    (["--model", "{llama}", "--prompts", "{tmp}/nothing.txt"], "does not exist"),
    (["--model", "{llama}", "--prompts", "{tmp}"], "is a folder, expected a file"),
    (["--model", "{tmp}/missing", "--prompts", "{tmp}/empty.txt", "--out", "{tmp}"],
     "output {tmp} is a folder, expected a file"),  # said before the model is even looked at
    (["--model", "{llama}", "--prompt", "a", "--temperature", "-1"], "temperature must be >= 0"),
    (["--model", "{llama}", "--prompt", "a", "--temperature", "inf"], "temperature must be >= 0 and finite"),
    (["--model", "{llama}", "--prompt", "a", "--repetition-penalty", "inf"], "repetition_penalty must be > 0 and fin"),
    (["--model", "{llama}", "--prompt", "a", "--top-p", "0"], "top_p must be in (0, 1]"),
    (["--model", "{llama}", "--prompt", "a", "--top-p", "1.5"], "top_p must be in (0, 1]"),
    (["--model", "{llama}", "--prompt", "a", "--max-new-tokens", "0"], "max_new_tokens must be > 0"),
    (["--model", "{llama}"], "exactly one of --prompt TEXT or --prompts FILE"),
    (["--prompt", "a"], "--model DIR"),
    (["--model", "{llama}", "--prompt", "a", "--dtype", "int3"], "must be one of auto"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, llama_dir, bert_dir, tmp_path):
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    args = [a.format(tmp=tmp_path, bert=bert_dir, llama=llama_dir) for a in args]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert message.format(tmp=tmp_path) in result.output


def test_a_classifier_folder_is_named_as_one(llama_dir, tmp_path):
    """A decoder-based classifier's config.json passes as a causal LM; its classifier.json says what it is."""
    folder = tmp_path / "classifier"
    shutil.copytree(llama_dir, folder)
    (folder / "classifier.json").write_text('{"labels": ["a", "b"], "head": "linear"}', encoding="utf-8")
    result = invoke("--model", folder, "--prompt", "a")
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert f"model {folder} is a classifier" in result.output and "genforge predict" in result.output
