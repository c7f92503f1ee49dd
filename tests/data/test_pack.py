import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from genforge.artifacts import read_manifest, sha256_tree, write_manifest
from genforge.data.config import PackConfig, TokenizerConfig
from genforge.data.pack import encode_file, load_tokenizer, pack, token_dtype
from genforge.data.tokenizer import train_tokenizer
from genforge.errors import ArtifactError, DataError

TRAIN = [
    "Thank you for contacting customer support. Your order is on its way.",
    "退款将在五个工作日内原路返回到您的付款账户。",
    "A document that mentions <|eos|> and <|im_start|> literally must stay one document.",
    "  leading spaces, a tab\tand a blank line\n\nthen more text 👍🏽",
    "",
    "مرحبا — שלום — 你好 — hello",
] * 20
VAL = ["Refunds are issued within five working days.", "请回复快递单号。"]


def make_prepared(folder: Path, train: list[str], val: list[str]) -> Path:
    """A prepared-data artifact as `data prepare` leaves it: JSONL splits + manifest written last."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, texts in (("train", train), ("val", val)):
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for t in texts:
                f.write(json.dumps({"text": t, "source": "test"}, ensure_ascii=False) + "\n")
    write_manifest(folder, "data.prepare", None)
    return folder


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pack")
    data = make_prepared(root / "tokdata", TRAIN, VAL)
    return train_tokenizer(TokenizerConfig(data=data, out=root / "tok", vocab_size=400))


def split_docs(tokens: np.ndarray, eos_id: int) -> list[np.ndarray]:
    ends = np.flatnonzero(tokens == eos_id)
    assert ends.size and ends[-1] == tokens.size - 1, "every document must end with EOS"
    return np.split(tokens, ends + 1)[:-1]


def test_round_trip_counts_and_lineage(tmp_path, tokenizer):
    data = make_prepared(tmp_path / "data", TRAIN, VAL)
    manifest = pack(PackConfig(data=data, tokenizer=tokenizer, workers=1))
    assert read_manifest(data, stage="data.pack", filename="pack.json") == manifest
    assert manifest["dtype"] == "uint16" and manifest["eos_id"] == 2
    tok = load_tokenizer(data / "tokenizer" / "tokenizer.json")
    assert manifest["vocab_size"] == tok.get_vocab_size()
    for split, texts in (("train", TRAIN), ("val", VAL)):
        tokens = np.fromfile(data / f"{split}.bin", dtype=np.uint16)
        docs = split_docs(tokens, manifest["eos_id"])
        assert [tok.decode(d[:-1].tolist(), skip_special_tokens=False) for d in docs] == texts
        assert manifest[f"{split}_tokens"] == tokens.size
        assert manifest[f"{split}_docs"] == len(texts)
        assert manifest[f"{split}_bytes"] == sum(len(t.encode("utf-8")) for t in texts)
    # the data folder is self-contained: the copied tokenizer loads and matches the recorded hash
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(data / "tokenizer").eos_token_id == 2
    copied = [p for p in (data / "tokenizer").iterdir() if p.name not in ("manifest.json", "config.yaml")]
    assert manifest["tokenizer_sha256"] == sha256_tree(copied)
    assert manifest["tokenizer_manifest"]["stage"] == "tokenizer"
    assert manifest["parent"]["stage"] == "data.prepare"
    assert read_manifest(data, stage="data.prepare")  # the prepare manifest is untouched


def test_a_tokenizer_exported_with_padding_and_truncation_packs_documents_whole(tmp_path, tokenizer):
    exported = tmp_path / "exported"  # as sentence-transformers ship MiniLM: fixed padding and truncation at 128
    shutil.copytree(tokenizer, exported)
    raw = json.loads((exported / "tokenizer.json").read_text(encoding="utf-8"))
    raw["padding"] = {"strategy": {"Fixed": 32}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": 0,
                      "pad_type_id": 0, "pad_token": "<|pad|>"}
    raw["truncation"] = {"max_length": 8, "strategy": "LongestFirst", "stride": 0, "direction": "Right"}
    (exported / "tokenizer.json").write_text(json.dumps(raw), encoding="utf-8")
    whole = make_prepared(tmp_path / "whole", TRAIN, VAL)
    cut = make_prepared(tmp_path / "cut", TRAIN, VAL)
    pack(PackConfig(data=whole, tokenizer=tokenizer, workers=1))
    pack(PackConfig(data=cut, tokenizer=exported, workers=1))
    for split in ("train", "val"):
        assert np.array_equal(np.fromfile(cut / f"{split}.bin", np.uint16), np.fromfile(whole / f"{split}.bin", np.uint16))


def test_dtype_choice():
    assert token_dtype(400) == np.uint16
    assert token_dtype(65535) == np.uint16
    assert token_dtype(65536) == np.uint32
    assert token_dtype(200_000) == np.uint32


def test_uint32_files_and_worker_processes_give_the_same_tokens(tmp_path, tokenizer):
    data = make_prepared(tmp_path / "data", TRAIN * 3, VAL)
    src, tok_file = data / "train.jsonl", tokenizer / "tokenizer.json"
    inline = encode_file(src, tmp_path / "a.bin", tok_file, np.dtype(np.uint16), 2, workers=1, batch_docs=7)
    pooled = encode_file(src, tmp_path / "b.bin", tok_file, np.dtype(np.uint32), 2, workers=2, batch_docs=7,
                         inline_below=0)
    assert inline.pop("workers") == 1 and pooled.pop("workers") == 2
    assert inline == pooled
    a = np.fromfile(tmp_path / "a.bin", dtype=np.uint16)
    b = np.fromfile(tmp_path / "b.bin", dtype=np.uint32)
    assert (tmp_path / "b.bin").stat().st_size == 4 * b.size
    assert np.array_equal(a.astype(np.uint32), b)
    assert inline["docs"] == len(TRAIN) * 3


def test_failure_midway_leaves_no_pack_json_and_no_partial_files(tmp_path, tokenizer):
    data = make_prepared(tmp_path / "data", TRAIN, VAL)
    pack(PackConfig(data=data, tokenizer=tokenizer, workers=1))
    with open(data / "val.jsonl", "a", encoding="utf-8") as f:
        f.write('{"text": 5}\n')
    with pytest.raises(DataError, match=r"val.jsonl:3: \"text\" must be a string"):
        pack(PackConfig(data=data, tokenizer=tokenizer, workers=1))
    assert not (data / "pack.json").exists()  # the old one is gone: it no longer describes the folder
    assert not [p for p in data.iterdir() if p.name.startswith(".")]  # no temp files left behind
    with pytest.raises(ArtifactError, match="no pack.json"):
        read_manifest(data, stage="data.pack", filename="pack.json")


def test_refuses_wrong_folders(tmp_path, tokenizer):
    data = make_prepared(tmp_path / "data", TRAIN, VAL)
    with pytest.raises(ArtifactError, match="no manifest.json"):
        pack(PackConfig(data=tmp_path, tokenizer=tokenizer))
    with pytest.raises(ArtifactError, match="has no tokenizer.json"):
        pack(PackConfig(data=data, tokenizer=data))
    with pytest.raises(ArtifactError, match="nope does not exist"):
        pack(PackConfig(data=data, tokenizer=tmp_path / "nope"))
    broken = tmp_path / "broken_tok"
    shutil.copytree(tokenizer, broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match="no tokenizer.json"):
        pack(PackConfig(data=data, tokenizer=broken))


def test_a_killed_tokenizer_run_is_refused_not_packed(tmp_path, tokenizer):
    """`tokenizer train` into a finished folder removes its manifest, then rewrites the files one by one: killed
    midway, the folder mixes the new run's files with the old's (config.yaml of the old run left). Pack must
    refuse it, not copy that mix beside the tokens."""
    data = make_prepared(tmp_path / "data", TRAIN, VAL)
    killed = tmp_path / "killed_tok"
    shutil.copytree(tokenizer, killed)
    (killed / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="tokenizer .*killed_tok is an unfinished genforge run"):
        pack(PackConfig(data=data, tokenizer=killed))
    assert not (data / "pack.json").exists()


def test_a_first_tokenizer_run_killed_before_its_manifest_is_refused(tmp_path, monkeypatch):
    """A first `tokenizer train` killed after writing the tokenizer files but before its manifest left a folder
    that looked like any Hugging Face tokenizer folder, and `data pack` took it. Its config is now written
    first, so the folder reads as an unfinished genforge run."""
    import genforge.data.tokenizer as tokenizer_module

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    data = make_prepared(tmp_path / "data", TRAIN, VAL)
    monkeypatch.setattr(tokenizer_module, "write_manifest", killed)
    with pytest.raises(KeyboardInterrupt):
        train_tokenizer(TokenizerConfig(data=data, out=tmp_path / "tok", vocab_size=400))
    assert (tmp_path / "tok" / "tokenizer.json").is_file()
    with pytest.raises(ArtifactError, match="tokenizer .*tok is an unfinished genforge run"):
        pack(PackConfig(data=data, tokenizer=tmp_path / "tok"))


def test_the_tokenizer_copy_of_a_killed_pack_is_removed_by_the_next(tmp_path, tokenizer):
    """A killed pack leaves its half-copied tokenizer folder (`.tokenizer.PID.tmp`); the next pack into the
    same folder removes it, and keeps a running pack's."""
    import os
    import subprocess
    import sys

    data = make_prepared(tmp_path / "data", TRAIN, VAL)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    dead, running = data / f".tokenizer.{gone}.tmp", data / f".tokenizer.{os.getppid()}.tmp"
    for leftover in (dead, running):
        leftover.mkdir()
        (leftover / "tokenizer.json").write_text("{half")
    pack(PackConfig(data=data, tokenizer=tokenizer, workers=1))
    assert not dead.exists() and running.is_dir() and (data / "tokenizer" / "tokenizer.json").is_file()


def test_cli_packs_and_errors_in_one_line(tmp_path, tokenizer):
    from genforge.cli import app

    data = make_prepared(tmp_path / "data", TRAIN, VAL)
    ok = CliRunner().invoke(app, ["data", "pack", "--data", str(data), "--tokenizer", str(tokenizer)])
    assert ok.exit_code == 0, ok.output
    assert (data / "pack.json").is_file() and (data / "train.bin").is_file()
    manifest = read_manifest(data, stage="data.pack", filename="pack.json")
    # bytes/token without the EOS after each document, as pack.json and `tokenizer train` report it
    val_row = next(line for line in ok.output.splitlines() if line.split("│")[1:2] == ["   val "])
    assert val_row.split("│")[5].strip() == f"{manifest['val_bytes'] / (manifest['val_tokens'] - 2):.2f}"
    bad = CliRunner().invoke(app, ["data", "pack", "--data", str(tmp_path / "nope"), "--tokenizer", str(tokenizer)])
    assert bad.exit_code == 2
    assert bad.output.strip() == f"error: {tmp_path / 'nope'} does not exist"


def test_cli_names_a_tokenizer_file_given_for_its_folder(tmp_path, tokenizer):
    from genforge.cli import app

    data = make_prepared(tmp_path / "data", TRAIN, VAL)
    file = tokenizer / "tokenizer.json"
    bad = CliRunner().invoke(app, ["data", "pack", "--data", str(data), "--tokenizer", str(file)])
    assert bad.exit_code == 2
    assert bad.output.strip() == (f"error: {file} is a file; --tokenizer expects a folder: a `genforge tokenizer "
                                  "train` folder or a model folder holding tokenizer.json")


def test_corrupt_tokenizer_empty_train_and_non_utf8_text_are_one_line_errors(tmp_path, tokenizer):
    data = make_prepared(tmp_path / "data", TRAIN, VAL)
    pack(PackConfig(data=data, tokenizer=tokenizer, workers=1))
    broken = tmp_path / "broken_tok"
    shutil.copytree(tokenizer, broken)
    (broken / "tokenizer.json").write_text("{bad")
    with pytest.raises(ArtifactError, match=r"broken_tok/tokenizer.json is not a valid tokenizer file \(.*\): "
                                            "re-copy it or retrain it"):
        pack(PackConfig(data=data, tokenizer=broken, workers=1))
    (data / "train.jsonl").write_text("\n")
    with pytest.raises(DataError, match="train.jsonl holds no documents"):
        pack(PackConfig(data=data, tokenizer=tokenizer, workers=1))
    assert read_manifest(data, stage="data.pack", filename="pack.json")  # both refused before touching the pack
    (data / "train.jsonl").write_bytes('{"text": "café"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="train.jsonl:1 is not UTF-8 text"):
        pack(PackConfig(data=data, tokenizer=tokenizer, workers=1))


def test_preparing_again_unpacks_the_folder(tmp_path, tokenizer):
    from genforge.data.config import PrepareConfig
    from genforge.data.prepare import prepare

    (tmp_path / "a.txt").write_text("\n\n".join(f"A long enough paragraph number {i}." for i in range(50)))
    data = tmp_path / "data"
    prepare(PrepareConfig(inputs=[tmp_path / "a.txt"], out=data, workers=1))
    pack(PackConfig(data=data, tokenizer=tokenizer, workers=1))
    (tmp_path / "a.txt").write_text("\n\n".join(f"Another paragraph, this is number {i}." for i in range(50)))
    prepare(PrepareConfig(inputs=[tmp_path / "a.txt"], out=data, workers=1))
    assert read_manifest(data, "data.prepare")
    with pytest.raises(ArtifactError, match="pack.json"):  # the old tokens no longer describe the text
        read_manifest(data, "data.pack", filename="pack.json")


def test_a_missing_or_damaged_packed_tokenizer_is_one_line(tmp_path, tokenizer):
    from genforge.data.pack import packed_tokenizer

    data = make_prepared(tmp_path / "data", TRAIN, VAL)
    pack(PackConfig(data=data, tokenizer=tokenizer, workers=1))
    assert packed_tokenizer(data).get_vocab()
    (data / "tokenizer" / "tokenizer.json").write_text("{bad", encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"tokenizer cannot be loaded \(.*\): pack the data again") as info:
        packed_tokenizer(data)
    assert "\n" not in str(info.value)
    shutil.rmtree(data / "tokenizer")
    with pytest.raises(ArtifactError, match="pack the data again"):
        packed_tokenizer(data)
