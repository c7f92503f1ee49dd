import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from genforge.artifacts import (
    atomic_open,
    atomic_write_text,
    begin_output,
    check_output_file,
    input_file,
    lineage,
    read_manifest,
    sha256_file,
    write_manifest,
)
from genforge.config import field
from genforge.errors import ArtifactError, DataError


@dataclass
class Cfg:
    size: int = field(3, help="size")


def test_atomic_open_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write("half-written")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temp file left behind


def test_temp_files_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    """A killed writer leaves its hidden temp file (it can be as large as a model's weights). The next write of
    the same path removes those of writers that no longer run, and keeps a running writer's and another
    file's."""
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead = tmp_path / f".model.safetensors.{gone.stdout.strip()}.k3j_9x0a.tmp"
    running = tmp_path / f".model.safetensors.{os.getppid()}.ab12cd34.tmp"
    other = tmp_path / f".model.safetensors.json.{gone.stdout.strip()}.k3j_9x0a.tmp"
    for leftover in (dead, running, other):
        leftover.write_bytes(b"half-written")
    atomic_write_text(tmp_path / "model.safetensors", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.safetensors", running.name, other.name])


def test_manifest_records_inputs_parent_and_config(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text("hello")
    first = tmp_path / "a"
    started = begin_output(first, "data.prepare")
    parent = write_manifest(first, "data.prepare", Cfg(), inputs=[raw], metrics={"docs": 1}, started=started)
    second = tmp_path / "b"
    begin_output(second, "tokenizer")
    child = write_manifest(second, "tokenizer", Cfg(size=5), parent=parent)
    assert parent["inputs"] == [{"path": str(raw), "sha256": sha256_file(raw)}]
    assert read_manifest(second, "tokenizer")["config"] == {"size": 5}
    assert (second / "config.yaml").read_text() == "size: 5\n"
    assert [m["stage"] for m in lineage(child)] == ["tokenizer", "data.prepare"]


def test_second_manifest_in_same_folder_keeps_the_first(tmp_path):
    begin_output(tmp_path, "data.prepare")
    write_manifest(tmp_path, "data.prepare", Cfg())
    write_manifest(tmp_path, "data.pack", Cfg(size=9), filename="pack.json")
    assert read_manifest(tmp_path, "data.prepare")["config"] == {"size": 3}
    assert read_manifest(tmp_path, "data.pack", filename="pack.json")["config"] == {"size": 9}
    assert (tmp_path / "pack.config.yaml").is_file()


def test_read_manifest_refuses_missing_unfinished_corrupt_and_wrong_kind(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(ArtifactError, match="did not finish"):
        read_manifest(tmp_path)
    write_manifest(tmp_path, "tokenizer", None)
    with pytest.raises(ArtifactError, match="is a 'tokenizer' artifact; expected data.prepare"):
        read_manifest(tmp_path, "data.prepare")
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(ArtifactError, match="corrupt"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="corrupt: a JSON object was expected, not list"):
        read_manifest(tmp_path, "data.prepare")


def test_begin_output_unmarks_a_previous_run(tmp_path):
    write_manifest(tmp_path, "tokenizer", None)
    begin_output(tmp_path, "tokenizer")
    assert not (tmp_path / "manifest.json").exists()
    with pytest.raises(ArtifactError, match="not a folder"):
        (tmp_path / "file").write_text("x")
        begin_output(tmp_path / "file", "tokenizer")


def test_atomic_files_get_normal_permissions(tmp_path):
    atomic_write_text(tmp_path / "shared.txt", "x")
    mode = stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_file_paths_that_are_folders_are_named_as_such(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactError, match="is a folder, expected a file"):
        check_output_file(tmp_path)
    with pytest.raises(ArtifactError, match="file is a file, not a folder"):
        check_output_file(tmp_path / "file" / "out.jsonl")
    check_output_file(tmp_path / "new" / "out.jsonl")  # a missing folder is made when writing
    assert input_file(tmp_path / "file", "prompts file") == tmp_path / "file"
    with pytest.raises(DataError, match=f"prompts file {tmp_path} is a folder, expected a file"):
        input_file(tmp_path, "prompts file")
    with pytest.raises(DataError, match="nope does not exist"):
        input_file(tmp_path / "nope")


def test_an_out_holding_another_stage_is_refused_and_left_whole(tmp_path):
    """A rerun redoes its own folder; another command's --out there would have replaced a model's manifest."""
    write_manifest(tmp_path, "finetune", None)
    with pytest.raises(ArtifactError, match=r"^--out .* holds a finished finetune artifact \(made .*; this command "
                                            r"writes feedback.export\); choose another folder$"):
        begin_output(tmp_path, "feedback.export")
    assert read_manifest(tmp_path, "finetune")
    begin_output(tmp_path, "finetune")  # the same stage again: redone as before
    assert not (tmp_path / "manifest.json").exists()
    (tmp_path / "manifest.json").write_text("{broken")  # too damaged to say what it was: redone as before
    begin_output(tmp_path, "feedback.export")


def test_manifest_inputs_are_absolute_whatever_folder_the_command_ran_in(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw.txt").write_text("hello")
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(tmp_path / "out", "data.prepare", Cfg(), inputs=[Path("data/raw.txt")])
    assert manifest["inputs"][0]["path"] == str(tmp_path / "data" / "raw.txt")
