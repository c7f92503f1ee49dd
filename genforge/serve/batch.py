"""Continuous batching: sequences join and leave one running batch between decode steps.

The batch is a preallocated KV cache of `max_rows` rows x `cache_len` columns (genforge's fast Llama
layout, genforge/generate/llama.py). Live sequences occupy rows 0..n-1, so a step runs the forward on
a view of the first n rows only: a lone request costs a batch-1 step, not a `max_rows` one. Columns
are shared: every step writes column `col` of every live row, and row b's prompt starts at
`start[b]` (its RoPE position at column c is c - start[b]; columns before `start[b]` are masked).

- join: new prompts are prefilled together into the next free rows, right-aligned to end at `col`
  (the column the running rows just wrote), so from the next step on they decode in lockstep.
- leave: the last row moves into the freed one (its KV columns are copied), keeping rows 0..n-1 dense.
- chunked prefill: while rows are decoding, a prompt longer than `prefill_chunk` tokens is staged instead:
  each step prefills its next chunk into a one-row staging cache (positions are relative to a row's start,
  so those keys are valid anywhere), and when one chunk is left the row joins like any other, its staged
  columns copied in before the last chunk runs. A long prompt then costs the running rows one chunk of
  extra work per step instead of one step as long as the whole prompt.
- room: a new row needs `col >= its prompt` and every row needs `start + prompt + budget <= cache_len`;
  when that fails the live columns are shifted (left past the oldest prompt, or right for a long one),
  and a request that still does not fit waits for rows to leave. With `cache_len` = 2 x the context,
  any request fits once a row is free.

Each row samples with its own parameters and generator (genforge.generate.sampling), so a sequence's
tokens do not depend on its neighbours: greedy output alone equals greedy output in a batch.
Other architectures run on their own HF forward (`HFRunner`); their cache cannot take rows in place, so
such a batch takes new sequences only when it is empty, and finished rows idle until it drains.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice

import torch

from genforge.config import available_memory
from genforge.errors import ConfigError
from genforge.generate.config import SamplingParams
from genforge.generate.decoder import Decoder
from genforge.generate.llama import KVCache, LlamaRunner
from genforge.generate.sampling import Sampler, next_tokens


@dataclass(eq=False)
class Seq:
    """One sequence to generate. The worker thread appends `tokens` and sets `finish_reason`
    ("eos" | "length" | "cancelled" | "timeout" | "error"); its owner sets `cancel` to end it early."""

    prompt: list[int]
    params: SamplingParams
    max_tokens: int  # budget; prompt + budget must fit the batch's `longest`
    stop_ids: frozenset[int] = frozenset()
    deadline: float = math.inf  # time.monotonic() after which the worker ends it with "timeout"
    wake: Callable[[], None] | None = None  # called by the worker when the sequence finishes, and after
    watch: bool = True  # each new token too (streaming, stop strings); else the owner only wants the end
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    cancel: bool = False
    first_token: float = 0.0  # time.monotonic() of its first decode step (time to first token)
    end: int = 0  # cache columns this row may reach (set on joining)


def _generator(seed: int | None) -> torch.Generator:
    seed = seed if seed is not None else int(torch.randint(0, 2**62, ()).item())
    return torch.Generator().manual_seed(seed)


def check_cache_fits(runner: LlamaRunner, rows: int, columns: int) -> None:
    """Refuse, before allocating it, a batch KV cache larger than the free memory: torch would fail with an
    allocator error, or reserve it lazily and be killed once the rows fill it."""
    w = runner.weights
    size = len(w.layers) * 2 * rows * w.kv_heads * columns * w.head_dim * w.dtype.itemsize
    free = available_memory()
    if free is not None and size > free:
        raise ConfigError(f"the KV cache of --max-batch {rows} rows x --cache-len {columns} columns needs "
                          f"{size / 2**30:.1f} GiB but {free / 2**30:.1f} GiB of memory is free: lower --max-batch "
                          "or --cache-len")


class SlotBatch:
    """The running batch of one model; used by one worker thread only."""

    def __init__(self, decoder: Decoder, max_rows: int, cache_len: int = 0, max_prefill_tokens: int = 4096,
                 prefill_chunk: int = 0):
        self.runner = decoder.runner
        self.pad_id = decoder.pad_id
        self.joinable = isinstance(self.runner, LlamaRunner)
        context = decoder.context or 4096
        self.cache_len = cache_len or 2 * context
        self.longest = min(context, self.cache_len)  # most prompt + output tokens of one sequence
        self.max_rows = max_rows
        self.max_prefill_tokens = max_prefill_tokens
        if self.joinable:
            check_cache_fits(self.runner, max_rows, self.cache_len)
        self.cache = self.runner.new_cache(max_rows, self.cache_len) if self.joinable else None
        self.rows: list[Seq | None] = []  # None: a finished row of a non-joinable batch
        self.col = 0
        self.start = torch.zeros(max_rows, dtype=torch.long)
        self.pending = torch.zeros(max_rows, dtype=torch.long)
        self.temperature = torch.zeros(max_rows, 1)
        self.top_k = torch.zeros(max_rows, dtype=torch.long)
        self.top_p = torch.ones(max_rows, 1)
        self.penalty = torch.ones(max_rows, 1)
        self.seen: torch.Tensor | None = None  # [max_rows, vocab], once some row has a repetition penalty
        self.generators: list[torch.Generator | None] = [None] * max_rows
        self.prefill_chunk = prefill_chunk if self.joinable else 0
        self.staged: Seq | None = None  # the long prompt being prefilled chunk by chunk
        self.staged_tokens = 0  # how much of its prompt is in `stage_cache`
        self.stage_cache: KVCache | None = None

    def live(self) -> list[Seq]:
        return [s for s in self.rows if s is not None] + ([self.staged] if self.staged else [])

    def stageable(self, seq: Seq) -> bool:
        """Whether `seq` should be prefilled in chunks: its prompt is long, the stage is free, and rows are
        decoding (an idle batch loses nothing by taking the whole prompt at once)."""
        return (self.prefill_chunk > 0 and self.staged is None and bool(self.rows)
                and len(seq.prompt) > self.prefill_chunk)

    def stage(self, seq: Seq) -> None:
        """Start prefilling `seq` (see `stageable`) chunk by chunk at the next steps."""
        if self.stage_cache is None:
            self.stage_cache = self.runner.new_cache(1, self.longest)
        self.staged, self.staged_tokens = seq, 0

    def _view(self, first: int, last: int) -> KVCache:
        if not self.joinable:
            return self.cache
        return KVCache(self.cache.kv[:, :, first:last], self.cache.cos, self.cache.sin)

    def _shift_for(self, new: list[Seq], col: int) -> int | None:
        """Columns to shift the live rows by so that `new` can join with its prompts ending at `col`."""
        width, budget = max(len(s.prompt) for s in new), max(s.max_tokens for s in new)
        if not self.rows:
            return width - col if width + budget <= self.cache_len else None
        n = len(self.rows)
        low = max(-int(self.start[:n].min()), width - col)  # keep every start >= 0 and col >= width
        need = max(max(s.end for s in self.rows), col + budget)
        if low <= 0 and need <= self.cache_len:
            return 0
        return low if need + low <= self.cache_len else None

    def admissible(self, waiting: Iterable[Seq]) -> int:
        """How many of the first `waiting` sequences can join at the next step (FIFO: stops at the first misfit)."""
        if not self.joinable and self.rows:
            return 0
        col = self.col + 1 if self.rows else 0  # the next step first advances the running rows
        taken: list[Seq] = []
        for seq in islice(waiting, self.max_rows - len(self.rows)):
            if self.prefill_chunk and self.rows and len(seq.prompt) > self.prefill_chunk:
                break  # a long prompt waits for the stage (`stageable`) rather than stall the running rows
            trial = [*taken, seq]
            width = max(len(s.prompt) for s in trial)
            if taken and width * len(trial) > self.max_prefill_tokens:
                break
            if self.joinable and self._shift_for(trial, col) is None:
                break
            taken = trial
        return len(taken)

    @torch.inference_mode()
    def step(self, new: list[Seq]) -> list[Seq]:
        """Advance the running rows one token, let `new` join, sample; return the sequences that changed.

        `new` must be admissible (`admissible`); finished sequences leave the batch before returning.
        """
        logits = []
        if self.rows:
            logits.append(self._decode())
        if new:
            logits.append(self._join(new))
        if self.staged is not None and (joined := self._advance_stage()) is not None:
            logits.append(joined)
        if not logits:  # only a chunk of the staged prompt ran
            return []
        tokens = next_tokens(torch.cat(logits), self._sampler())
        self.pending[:len(tokens)] = tokens
        changed, done, now = [], [], time.monotonic()
        for seq, token in zip(self.rows, tokens.tolist(), strict=True):
            if seq is None:
                continue
            seq.first_token = seq.first_token or now
            if token in seq.stop_ids:
                seq.finish_reason = "eos"
            else:
                seq.tokens.append(token)
                if len(seq.tokens) >= seq.max_tokens:
                    seq.finish_reason = "length"
            changed.append(seq)
            if seq.finish_reason:
                done.append(seq)
        self.release(done)
        return changed

    def _decode(self) -> torch.Tensor:
        n = len(self.rows)
        if self.joinable and self.col >= self.cache_len:
            raise RuntimeError(f"batch cache overflow at column {self.col} (a row outgrew its reserved columns)")
        start = self.start[:n]
        logits = self.runner.forward(self._view(0, n), self.pending[:n, None], (self.col - start)[:, None],
                                     self.col, start)
        self.col += 1
        return logits

    def _join(self, new: list[Seq]) -> torch.Tensor:
        n, k = len(self.rows), len(new)
        lengths = torch.tensor([len(s.prompt) for s in new])
        width = int(lengths.max())
        if not self.rows:
            self.col = width
            if not self.joinable:
                self.cache = self.runner.new_cache(k, width + max(s.max_tokens for s in new))
        else:
            delta = self._shift_for(new, self.col)
            if delta is None:
                raise RuntimeError("sequences joined a batch without room for them")
            if delta:
                self._shift(delta)
        ids = torch.full((k, width), self.pad_id, dtype=torch.long)
        for i, seq in enumerate(new):
            ids[i, width - len(seq.prompt):] = torch.tensor(seq.prompt)
        start = self.col - lengths
        positions = (torch.arange(width)[None] - (width - lengths)[:, None]).clamp(min=0)
        logits = self.runner.forward(self._view(n, n + k), ids, positions, self.col - width, start)
        self.start[n:n + k] = start
        for seq in new:
            self._add_row(seq)
        return logits

    def _add_row(self, seq: Seq) -> None:
        """Append `seq` as the next row (its prompt already in the cache): its sampling state and budget."""
        row, p = len(self.rows), seq.params
        self.temperature[row, 0], self.top_k[row] = p.temperature, p.top_k
        self.top_p[row, 0], self.penalty[row, 0] = p.top_p, p.repetition_penalty
        self.generators[row] = _generator(p.seed)
        if p.repetition_penalty != 1 and self.seen is None:
            self.seen = torch.zeros(self.max_rows, self.runner.vocab_size, dtype=torch.bool)
        if self.seen is not None:
            self.seen[row] = False
            self.seen[row, seq.prompt] = True
        seq.end = self.col + seq.max_tokens
        self.rows.append(seq)

    def _advance_stage(self) -> torch.Tensor | None:
        """Prefill the staged prompt's next chunk; with one chunk left, join it as the last row (its logits),
        or wait while the batch has no free row or no room for it (None)."""
        seq, done = self.staged, self.staged_tokens
        length = len(seq.prompt)
        if length - done > self.prefill_chunk:
            ids = torch.tensor([seq.prompt[done:done + self.prefill_chunk]])
            self.runner.forward(self.stage_cache, ids, torch.arange(done, done + ids.shape[1])[None], done, None)
            self.staged_tokens += ids.shape[1]
            return None
        n = len(self.rows)
        if n == self.max_rows:
            return None
        if not self.rows:
            self.col = length
        elif (delta := self._shift_for([seq], self.col)) is None:
            return None
        elif delta:
            self._shift(delta)
        first = self.col - length
        self.cache.kv[:, :, n, :, first:first + done] = self.stage_cache.kv[:, :, 0, :, :done]
        rest = torch.tensor([seq.prompt[done:]])
        self.start[n] = first
        logits = self.runner.forward(self._view(n, n + 1), rest, torch.arange(done, length)[None],
                                     first + done, self.start[n:n + 1])
        self.staged = None
        self._add_row(seq)
        return logits

    def _sampler(self) -> Sampler:
        n = len(self.rows)
        return Sampler(temperature=self.temperature[:n], top_k=self.top_k[:n], top_p=self.top_p[:n],
                       penalty=self.penalty[:n], generators=self.generators[:n],
                       seen=None if self.seen is None else self.seen[:n])

    def _shift(self, delta: int) -> None:
        """Move the live columns of the running rows by `delta` (positions are relative, so they are unchanged)."""
        n = len(self.rows)
        first = int(self.start[:n].min())
        kv = self.cache.kv
        kv[:, :, :n, :, first + delta:self.col + delta] = kv[:, :, :n, :, first:self.col].clone()
        self.start[:n] += delta
        self.col += delta
        for seq in self.rows:
            seq.end += delta

    def release(self, seqs: Iterable[Seq]) -> None:
        """Take sequences out of the batch (finished, cancelled, timed out)."""
        seqs = list(seqs)
        if self.staged is not None and any(s is self.staged for s in seqs):
            self.staged = None
        index = {id(s): row for row, s in enumerate(self.rows) if s is not None}
        for row in sorted((index[id(s)] for s in seqs if id(s) in index), reverse=True):
            if self.joinable:
                self._remove(row)
            else:
                self.rows[row] = None
        if not self.live():
            self.reset()

    def _remove(self, row: int) -> None:
        last = len(self.rows) - 1
        if row != last:
            first = int(self.start[last])
            self.cache.kv[:, :, row, :, first:self.col] = self.cache.kv[:, :, last, :, first:self.col]
            tensors = [self.start, self.pending, self.temperature, self.top_k, self.top_p, self.penalty]
            for t in tensors + ([self.seen] if self.seen is not None else []):
                t[row] = t[last]
            self.generators[row] = self.generators[last]
            self.rows[row] = self.rows[last]
        self.rows.pop()
        self.generators[last] = None

    def reset(self) -> None:
        """Empty the batch (the cache's columns are stale from now on, and masked for whoever comes next)."""
        self.rows, self.staged = [], None
        self.generators = [None] * self.max_rows
        if not self.joinable:
            self.cache = None
