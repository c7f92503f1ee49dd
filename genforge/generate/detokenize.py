"""Incremental detokenisation: valid UTF-8 text pieces from a growing list of token ids.

With byte-level BPE one Chinese character or emoji is often split over several tokens, and decoding a
token on its own yields U+FFFD. So each new token decodes a small window starting at the last point
where the text was known to be whole (`prefix`). Only a trailing U+FFFD is uncertain: UTF-8 decoding
with replacement turns an incomplete final character into exactly one U+FFFD, while every earlier
U+FFFD stands for bytes that no later byte can repair. So the window's text is released up to that
last character, and a model emitting invalid bytes (an untrained one often does) still streams instead
of holding its whole answer back. Pieces concatenate to exactly `decode(all ids)`; the window keeps the
cost per token constant instead of re-decoding the whole sequence. Stop strings are applied on the
released text (see stopping.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from genforge.generate.stopping import find_stop, partial_stop

REPLACEMENT = "\ufffd"


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    """Decode generated ids exactly as the stream does (special tokens dropped, no space clean-up)."""
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


@dataclass
class TextStream:
    """The text of one generated sequence, released piece by piece; `stopped` once a stop string appears."""

    tokenizer: Any
    stops: Sequence[str] = ()
    ids: list[int] = field(default_factory=list)
    prefix: int = 0  # ids[:prefix] are already part of `text`
    read: int = 0  # ids[prefix:read] decode to the tail of `text` (the context of the next window)
    text: str = ""  # whole characters decoded so far
    partial: int = 0  # characters of the open window (ids[read:]) already added to `text`
    emitted: int = 0  # characters of `text` already released
    stopped: bool = False

    def push(self, token_id: int) -> str:
        """Add one token; return the newly released text ('' while a character or stop string is pending)."""
        if self.stopped:
            return ""
        self.ids.append(token_id)
        before = decode(self.tokenizer, self.ids[self.prefix:self.read])
        new = decode(self.tokenizer, self.ids[self.prefix:])[len(before):]
        if new and not new.endswith(REPLACEMENT):
            self.text += new[self.partial:]
            self.prefix, self.read, self.partial = self.read, len(self.ids), 0
        elif len(new) - 1 > self.partial:  # all but the trailing U+FFFD is final
            self.text += new[self.partial:-1]
            self.partial = len(new) - 1
        return self._release(final=False)

    def flush(self) -> str:
        """The sequence ended: release what is left (an incomplete final character decodes as U+FFFD)."""
        if not self.stopped:
            before = decode(self.tokenizer, self.ids[self.prefix:self.read])
            self.text += decode(self.tokenizer, self.ids[self.prefix:])[len(before) + self.partial:]
            self.prefix, self.read, self.partial = len(self.ids), len(self.ids), 0
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        end = len(self.text)
        if self.stops and not self.stopped:
            hit = find_stop(self.text, self.stops, self.emitted)
            if hit is not None:
                self.text, end, self.stopped = self.text[:hit], hit, True
            elif not final:
                end -= partial_stop(self.text, self.stops)
        piece, self.emitted = self.text[self.emitted:end], max(self.emitted, end)
        return piece

    @property
    def released(self) -> str:
        """All text released so far (after `flush`, the final completion)."""
        return self.text[:self.emitted]
