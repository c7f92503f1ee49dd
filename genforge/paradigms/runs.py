"""How the paradigm commands start, resume or redo a run in their --out folder (as `genforge pretrain` does).

A run has started once it wrote its first checkpoint (`marker`). `--resume` needs such a run; a new run
refuses a folder holding one that stopped midway (mixing the two would leave the old run's TensorBoard
events, epoch grids and variant folders beside the new ones), and redoes a finished one from scratch: what
the old run wrote (`written`) goes, so the folder holds one run only.

The adversarial loops (gan image, the text GANs' variants) run outside the engine, so they keep its resume
conventions: each checkpoint carries the settings it was trained with (`genforge.train.logs.run_settings`), a
resume with other settings says what changed (`note_resume`), and the optimisers train on with this run's flags,
not the ones saved in their state (`restore_optimizer`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genforge.artifacts import begin_output, check_output, check_resume_folder

if TYPE_CHECKING:
    import torch


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


def restore_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any], **flags: Any) -> None:
    """Load an optimiser's saved moments but keep this run's `flags` (lr, betas): torch's `load_state_dict` also
    brings back the saved hyperparameters, which would silently ignore an --lr given with --resume."""
    optimizer.load_state_dict(saved)
    for group in optimizer.param_groups:
        group.update(flags)
