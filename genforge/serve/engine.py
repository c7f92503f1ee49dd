"""The decoding worker of one model: a bounded queue in front of a continuous batch, run by one thread.

Request handlers (on the asyncio event loop) `submit` sequences and wait; the worker thread loops
while there is work: it ends cancelled and timed-out sequences, admits waiting ones into free batch
rows, runs one step, and wakes the handlers whose sequences changed (one `wake` per request and step).
A thread, not a task: the step is torch work that releases the GIL, so the event loop keeps serving
HTTP, SSE and detokenisation while the model runs.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from genforge.generate.decoder import Decoder
from genforge.serve.batch import Seq, SlotBatch

log = logging.getLogger("genforge.serve")


class QueueFull(Exception):
    """The queue cannot take more sequences now; retry after `retry_after` seconds."""

    def __init__(self, retry_after: float):
        super().__init__(f"the queue is full; retry in {retry_after:.0f} s")
        self.retry_after = retry_after


class EngineDown(Exception):
    """The worker thread has died (a bug outside a decode step): the model takes no more sequences."""


class Engine:
    def __init__(self, decoder: Decoder, *, name: str, max_batch: int = 32, max_queue: int = 256,
                 cache_len: int = 0, max_prefill_tokens: int = 4096, prefill_chunk: int = 0, metrics: Any = None):
        self.name = name
        self.label = f"the decoding worker of model '{name}'"  # in errors; `run_app` watches it by these three
        self.failure: Exception | None = None  # what ended the worker thread, if it died
        self.on_failure: Callable[[Exception], None] | None = None  # told when it dies (the server then exits)
        self.batch = SlotBatch(decoder, max_batch, cache_len, max_prefill_tokens, prefill_chunk)
        self.max_queue = max_queue
        self.metrics = metrics
        self.waiting: deque[Seq] = deque()
        self.step_seconds = 0.05  # running mean, for Retry-After estimates
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def longest(self) -> int:
        """Most prompt + generated tokens one sequence may take."""
        return self.batch.longest

    def start(self) -> None:
        if self._thread is None:
            self._closed = False
            self._thread = threading.Thread(target=self._run, name=f"genforge-engine-{self.name}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """End the worker; sequences still queued or running finish as "cancelled"."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        ended = [*self.waiting, *self.batch.live()]
        self.waiting.clear()
        self.batch.reset()
        for seq in ended:
            seq.finish_reason = seq.finish_reason or "cancelled"
        self._wake(ended)

    def submit(self, seqs: list[Seq]) -> None:
        """Queue sequences (all or none); QueueFull when the queue lacks room for all of them."""
        with self._cond:
            if self.failure is not None:
                raise EngineDown(f"{self.label} has stopped ({self.failure!r}); see the server log")
            if len(self.waiting) + len(seqs) > self.max_queue:
                raise QueueFull(self.retry_after())
            self.waiting.extend(seqs)
            self._cond.notify()

    def cancel(self, seqs: list[Seq]) -> None:
        """Ask the worker to end these sequences at its next step (no-op for finished ones)."""
        with self._cond:
            for seq in seqs:
                if seq.finish_reason is None:
                    seq.cancel = True
            self._cond.notify()

    def retry_after(self) -> float:
        """A guess of when a queue slot frees up: the queue's tokens over the batch's pace, at least 1 s."""
        queued = sum(s.max_tokens for s in self.waiting)
        return max(1.0, math.ceil(queued / self.batch.max_rows * self.step_seconds))

    def _ended(self, seqs: list[Seq], now: float) -> list[Seq]:
        out = []
        for seq in seqs:
            if seq.cancel:
                seq.finish_reason = "cancelled"
            elif now > seq.deadline:
                seq.finish_reason = "timeout"
            else:
                continue
            out.append(seq)
        return out

    def _run(self) -> None:
        """The worker's loop. An error that escapes it (a bug: a decode step's own errors only fail its rows)
        ends every queued and running sequence with "error" and tells `on_failure`, so no request waits for a
        worker that is gone."""
        try:
            self._loop()
        except Exception as e:
            log.exception("the decoding worker of model %s failed; ending its sequences", self.name)
            with self._cond:
                self.failure = e
                ended = [*self.waiting, *self.batch.live()]
                self.waiting.clear()
            for seq in ended:
                seq.finish_reason = seq.finish_reason or "error"
            self._wake(ended)
            if self.on_failure is not None:
                self.on_failure(e)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self.waiting and not self.batch.live():
                    self._cond.wait()
                if self._closed:
                    return
                now = time.monotonic()
                ended = self._ended(list(self.waiting), now)
                if ended:
                    self.waiting = deque(s for s in self.waiting if s.finish_reason is None)
                gone = self._ended(self.batch.live(), now)
                self.batch.release(gone)
                if self.waiting and self.batch.stageable(self.waiting[0]):
                    self.batch.stage(self.waiting.popleft())
                new = [self.waiting.popleft() for _ in range(self.batch.admissible(self.waiting))]
                queued = len(self.waiting)
            changed: list[Seq] = []
            if self.batch.rows or new or self.batch.staged:
                began = time.perf_counter()
                try:
                    changed = self.batch.step(new)
                except Exception:  # a bug or out of memory: fail these requests, keep serving others
                    log.exception("decode step failed; ending the sequences of the running batch")
                    changed = [*self.batch.live(), *new]
                    for seq in changed:
                        seq.finish_reason = "error"
                    self.batch.reset()
                self.step_seconds = 0.9 * self.step_seconds + 0.1 * (time.perf_counter() - began)
            self._wake(ended + gone + changed)
            if self.metrics is not None:
                self.metrics.step(self.name, running=len(self.batch.live()), queued=queued, stepped=len(changed),
                                  tokens=sum(1 for s in changed if s.finish_reason in (None, "length")),
                                  finished=[s.finish_reason for s in ended + gone + changed if s.finish_reason])

    @staticmethod
    def _wake(seqs: list[Seq]) -> None:
        wakes = {id(s.wake): s.wake for s in seqs if s.wake is not None and (s.watch or s.finish_reason)}
        for wake in wakes.values():
            wake()
