"""Stop strings over streamed text: where a stop string starts, and how much text to hold back.

Text is handed out as it is produced, so a piece that might be the beginning of a stop string must be
held back until the next pieces show whether the stop string completes (then it is dropped) or not
(then it is released). The stop string itself is never returned.
"""

from __future__ import annotations

from collections.abc import Sequence


def find_stop(text: str, stops: Sequence[str], start: int = 0) -> int | None:
    """Index of the earliest stop string occurring in `text` at or after `start`, or None."""
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None


def partial_stop(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that is a proper beginning of some stop string (0 if none)."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best
