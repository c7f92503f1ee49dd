"""The run-folder rules every paradigm command follows: a new run never mixes with an earlier one."""

import pytest

from genforge.errors import ArtifactError
from genforge.paradigms.runs import begin_run, check_run_folder

RUN = dict(resume=False, marker="checkpoints/latest", written=("checkpoints", "logs", "seqgan"))


def finished_run(out):
    """A folder as a finished run leaves it: checkpoint, logs, a phase folder and the manifest."""
    for name in ("checkpoints/latest", "logs", "seqgan"):
        (out / name).mkdir(parents=True)
    (out / "logs" / "events.out.tfevents.old").write_text("old")
    (out / "manifest.json").write_text('{"stage": "gan.text"}')
    return out


def test_a_redo_removes_what_the_earlier_run_wrote(tmp_path):
    """A redo kept the old run's TensorBoard events, epoch grids and variant folders beside the new ones."""
    out = finished_run(tmp_path / "run")
    (out / "notes.txt").write_text("mine")
    begin_run(out, "gan.text", started=True, **RUN)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_new_run_refuses_an_unfinished_one(tmp_path):
    out = finished_run(tmp_path / "run")
    (out / "manifest.json").unlink()  # interrupted
    with pytest.raises(ArtifactError, match="holds an unfinished run: add --resume"):
        check_run_folder(out, "gan.text", resume=False, started=True, marker="checkpoints/latest")
    assert (out / "logs" / "events.out.tfevents.old").is_file()


def test_resume_keeps_the_run_and_needs_one(tmp_path):
    out = finished_run(tmp_path / "run")
    begin_run(out, "gan.text", started=True, **{**RUN, "resume": True})
    assert (out / "logs" / "events.out.tfevents.old").is_file()
    with pytest.raises(ArtifactError, match="nothing to resume: .*checkpoints/latest does not exist"):
        check_run_folder(tmp_path / "empty", "gan.text", resume=True, started=False, marker="checkpoints/latest")
