"""A compressed folder's manifest records the files the run read (path + sha256), as fine-tune and pretrain
manifests do, and its card's own Lineage row shows their hashes rather than "-"."""

from pathlib import Path

from genforge.artifacts import read_manifest, sha256_file
from genforge.compress.config import CompressConfig
from genforge.compress.run import compress


def own_row(card: str) -> str:
    return next(line for line in card.splitlines() if line.startswith("| 0 | compress |"))


def test_classifier_manifest_and_card_hash_the_eval_file_and_weights(tmp_path, classifier_dir, sentiment_csv):
    out = compress(CompressConfig(model=classifier_dir, method="int8", out=tmp_path / "c", eval_data=sentiment_csv,
                                  measure_steps=2, threads=1))
    manifest = read_manifest(out, "compress")
    inputs = {Path(x["path"]).name: x["sha256"] for x in manifest["inputs"]}
    assert inputs["sentiment.csv"] == sha256_file(sentiment_csv)
    assert inputs["model.safetensors"] == sha256_file(classifier_dir / "model.safetensors")
    assert manifest["parent"]["stage"] == "finetune"  # the source model stays the parent
    row = own_row((out / "README.md").read_text())
    assert f"`sentiment.csv` {inputs['sentiment.csv'][:12]}" in row and not row.endswith("| - |")


def test_lm_training_data_and_eval_data_are_recorded_once(tmp_path, lm_dir, packed, settings):
    out = compress(CompressConfig(model=lm_dir, method="prune", out=tmp_path / "p", data=packed, eval_data=packed,
                                  recover=False, **settings))
    paths = [Path(x["path"]) for x in read_manifest(out)["inputs"]]
    assert paths == [packed.absolute() / "train.bin", packed.absolute() / "val.bin",
                     lm_dir.absolute() / "model.safetensors"]
    row = own_row((out / "README.md").read_text())
    assert f"`train.bin` {sha256_file(packed / 'train.bin')[:12]}" in row
