"""Text generation for people and programs: `generate(...) -> list[str]`, `stream(...)`, and the CLI's run.

All of them run the same loop (`iter_batch`) over the step-level decoder: prompts are sorted by length
and decoded `batch_size` at a time as left-padded batches; text is detokenised incrementally only
when someone watches it (streaming) or stop strings need it, otherwise once at the end.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from genforge.errors import ConfigError, DataError
from genforge.generate.config import GenerateConfig, SamplingParams
from genforge.generate.decoder import Decoder, load_decoder
from genforge.generate.detokenize import TextStream, decode


@dataclass
class Completion:
    prompt: str
    completion: str
    tokens: int  # generated tokens (a stop token is not counted)
    finish_reason: str  # "eos" | "length" | "stop"


def iter_batch(decoder: Decoder, prompts: Sequence[str], params: SamplingParams, max_new_tokens: int,
               stop: Sequence[str] = (), chat: bool = False, watch: bool = False,
               ids: list[list[int]] | None = None) -> Generator[tuple[int, str], None, list[Completion]]:
    """Decode `prompts` as one batch; yield (row, text piece) as text is released; return the completions.

    Pieces are produced only with `watch` or stop strings (incremental detokenisation costs two small
    decodes per token and row); without them the completions are decoded once at the end. `ids` are the
    prompts' token ids when the caller has already encoded them.
    """
    ids = ids or [decoder.encode(p, chat) for p in prompts]
    state = decoder.prefill(ids, params, max_new_tokens, decoder.stop_ids(chat))
    texts = [TextStream(decoder.tokenizer, tuple(stop)) for _ in prompts] if (watch or stop) else None
    while not state.done:
        tokens = decoder.decode_step(state).tolist()
        if texts is None:
            continue
        for row, token in enumerate(tokens):
            if token < 0:
                continue
            text = texts[row]
            piece = "" if state.finish_reason[row] == "eos" else text.push(token)
            if text.stopped:  # also on the last allowed token, which decode_step already ended as "length"
                state.finish(row, "stop")
                state.finish_reason[row] = "stop"
            if state.finished[row]:
                piece += text.flush()
            if piece:
                yield row, piece
    texts_out = [t.released for t in texts] if texts else [decode(decoder.tokenizer, t) for t in state.tokens]
    return [Completion(prompt=p, completion=texts_out[row], tokens=len(state.tokens[row]),
                       finish_reason=state.finish_reason[row]) for row, p in enumerate(prompts)]


def complete(decoder: Decoder, prompts: Sequence[str], params: SamplingParams, max_new_tokens: int,
             stop: Sequence[str] = (), chat: bool = False, batch_size: int = 8,
             on_piece: Callable[[int, str], None] | None = None,
             on_batch: Callable[[int], None] | None = None) -> list[Completion]:
    """Completions of many prompts, in their order; batches group prompts of similar token length."""
    ids = [decoder.encode(p, chat) for p in prompts]
    if decoder.context is not None:  # before any batch runs: the longest prompts decode last
        over = next((i for i, p in enumerate(ids) if len(p) >= decoder.context), None)
        if over is not None:
            raise ConfigError(f"prompt {over + 1} ({prompts[over][:40]!r}...) has {len(ids[over])} tokens, which "
                              f"leaves no room in the model's context of {decoder.context} tokens; shorten it")
    order = sorted(range(len(prompts)), key=lambda i: len(ids[i]))
    results: list[Completion | None] = [None] * len(prompts)
    for first in range(0, len(order), batch_size):
        rows = order[first:first + batch_size]
        run = iter_batch(decoder, [prompts[i] for i in rows], params, max_new_tokens, stop, chat,
                         watch=on_piece is not None, ids=[ids[i] for i in rows])
        while True:
            try:
                row, piece = next(run)
            except StopIteration as end:
                for row, c in zip(rows, end.value, strict=True):
                    results[row] = c
                break
            if on_piece:
                on_piece(rows[row], piece)
        if on_batch:
            on_batch(len(rows))
    return results


def _options(max_new_tokens: int, batch_size: int, stop: Sequence[str], sampling: dict[str, Any]) -> SamplingParams:
    if max_new_tokens <= 0:
        raise ConfigError(f"max_new_tokens must be > 0; got {max_new_tokens}")
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be > 0; got {batch_size}")
    if any(not isinstance(s, str) or not s for s in stop):
        raise ConfigError("stop strings must be non-empty strings")
    try:
        return SamplingParams(**sampling)
    except TypeError as e:
        raise ConfigError(f"unknown sampling option: {e}") from None


def generate(model: str | Path | Any, prompts: str | Sequence[str], *, tokenizer: Any = None,
             max_new_tokens: int = 128, stop: Sequence[str] = (), chat: bool = False, batch_size: int = 8,
             dtype: str = "auto", backend: str = "auto", **sampling: Any) -> list[str]:
    """Completions (prompt not included) of `prompts` by a model folder, HF model (+ tokenizer) or Decoder.

    `sampling`: temperature (0 = greedy), top_k, top_p, repetition_penalty, seed (see SamplingParams).
    """
    params = _options(max_new_tokens, batch_size, stop, sampling)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    bad = next((i for i, p in enumerate(prompts) if not isinstance(p, str)), None)
    if bad is not None:
        raise ConfigError(f"prompts must be strings; got {type(prompts[bad]).__name__} at position {bad}")
    decoder = load_decoder(model, tokenizer, dtype, backend)
    return [c.completion for c in complete(decoder, prompts, params, max_new_tokens, stop, chat, batch_size)]


def stream(model: str | Path | Any, prompt: str, *, tokenizer: Any = None, max_new_tokens: int = 128,
           stop: Sequence[str] = (), chat: bool = False, dtype: str = "auto", backend: str = "auto",
           **sampling: Any) -> Iterator[str]:
    """The completion of one prompt as text pieces, each yielded as soon as it is whole UTF-8 text."""
    params = _options(max_new_tokens, 1, stop, sampling)
    if not isinstance(prompt, str):  # a list would reach the decoder as a batch of one and fail deep in torch
        raise ConfigError(f"stream takes one prompt string, not a {type(prompt).__name__}; generate(...) takes "
                          "several")
    decoder = load_decoder(model, tokenizer, dtype, backend)
    for _, piece in iter_batch(decoder, [prompt], params, max_new_tokens, stop, chat, watch=True):
        yield piece


def read_prompts(path: Path) -> list[str]:
    """Prompts from a file: JSONL (`.jsonl`, a "prompt" per line) or plain text (one per non-blank line)."""
    from genforge.artifacts import input_file

    path = input_file(path, "prompts file")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"prompts file {path} is not UTF-8 text") from None
    prompts = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix.lower() == ".jsonl":
            try:
                prompt = json.loads(line)["prompt"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(f"{path}:{lineno} is not a JSON object with a \"prompt\" field") from None
            if not isinstance(prompt, str):
                raise DataError(f"{path}:{lineno}: \"prompt\" must be a string")
            prompts.append(prompt)
        else:
            prompts.append(line)
    if not prompts:
        raise DataError(f"prompts file {path} holds no prompts")
    return prompts


def _summary(completions: list[Completion], seconds: float, decoder: Decoder) -> None:
    from rich.console import Console
    from rich.table import Table

    tokens = sum(c.tokens for c in completions)
    table = Table(title="generate", show_header=False)
    for key, value in (("prompts", len(completions)), ("tokens generated", tokens),
                       ("seconds", f"{seconds:.2f}"), ("tokens/s", f"{tokens / max(seconds, 1e-9):.1f}"),
                       ("backend", decoder.backend)):
        table.add_row(key, str(value))
    Console(stderr=True).print(table)


def generate_from_config(cfg: GenerateConfig) -> list[dict[str, Any]]:
    """`genforge generate`: a single prompt streams to stdout; a prompts file is batched and printed or saved."""
    import torch
    import typer
    from tqdm import tqdm

    from genforge.artifacts import check_output_file, write_jsonl

    if cfg.out is not None:  # before the model loads and generates, not after
        check_output_file(cfg.out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    params = cfg.sampling()
    prompts = [cfg.prompt] if cfg.prompt is not None else read_prompts(cfg.prompts)
    decoder = load_decoder(cfg.model, dtype=cfg.dtype, backend=cfg.backend)
    started = time.perf_counter()
    if cfg.prompt is not None:
        def show(_: int, piece: str) -> None:
            sys.stdout.write(piece)
            sys.stdout.flush()

        completions = complete(decoder, prompts, params, cfg.max_new_tokens, cfg.stop, cfg.chat, 1, on_piece=show)
        typer.echo()
        c, seconds = completions[0], time.perf_counter() - started
        typer.secho(f"[{c.tokens} tokens, {c.tokens / max(seconds, 1e-9):.1f} tokens/s, {c.finish_reason}, "
                    f"{decoder.backend} backend]", err=True, dim=True)
    else:
        with tqdm(total=len(prompts), unit="prompt", desc="generate", file=sys.stderr) as bar:
            completions = complete(decoder, prompts, params, cfg.max_new_tokens, cfg.stop, cfg.chat,
                                   cfg.batch_size, on_batch=bar.update)
        if cfg.out is None:
            for i, c in enumerate(completions, 1):
                typer.secho(f"── [{i}] {c.prompt}", bold=True)
                typer.echo(c.completion)
        _summary(completions, time.perf_counter() - started, decoder)
    records = [asdict(c) for c in completions]
    if cfg.out is not None:
        write_jsonl(cfg.out, records)
        typer.echo(f"wrote {len(records)} completions to {cfg.out}", err=True)
    return records
