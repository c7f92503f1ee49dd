"""How the paradigm commands start, resume or redo a run in their --out folder (as `genforge pretrain` does).

A run has started once it wrote its first checkpoint (`marker`). `--resume` needs such a run; a new run
refuses a folder holding one that stopped midway (mixing the two would leave the old run's TensorBoard
events, epoch grids and variant folders beside the new ones), and redoes a finished one from scratch: what
the old run wrote (`written`) goes, so the folder holds one run only.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from genforge.artifacts import begin_output, check_output, check_resume_folder


def check_run_folder(out: Path, stage: str, *, resume: bool, started: bool, marker: str) -> None:
    """Refuse --out before any work: another stage's artifact, --resume without a run (`started`: `marker`, the
    first checkpoint, exists), or an unfinished run without --resume. Touches nothing."""
    check_output(out, stage)
    check_resume_folder(out, resume=resume, started=started, marker=marker)


def begin_run(out: Path, stage: str, *, resume: bool, started: bool, marker: str, written: tuple[str, ...]
              ) -> float:
    """Start writing --out (its inputs read and checked): a redo first removes the earlier run's `written`
    paths. Returns the start time for the manifest."""
    check_run_folder(out, stage, resume=resume, started=started, marker=marker)
    redo = not resume and started
    begun = begin_output(out, stage)
    if redo:
        for name in written:
            path = Path(out) / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    return begun
