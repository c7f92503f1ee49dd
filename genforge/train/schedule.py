"""Learning-rate schedule: linear warm-up, then cosine decay to min_lr (nanoGPT's get_lr).

A plain function of the step (and, for time-limited runs, of the elapsed fraction of the time
budget), so it needs no state in a checkpoint and a resumed run gets exactly the same rates.
"""

from __future__ import annotations

import math


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, max_steps: int,
          time_fraction: float = 0.0) -> float:
    """The learning rate of optimizer step `step` (0-based).

    Warm-up rises linearly to `lr` over `warmup_steps`. The cosine then runs over the rest of the run,
    where "progress" is the larger of the step fraction and `time_fraction` (elapsed / time budget):
    a run limited by --max-minutes still ends its decay at min_lr when its time is up.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    step_fraction = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    progress = min(1.0, max(step_fraction, time_fraction))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
