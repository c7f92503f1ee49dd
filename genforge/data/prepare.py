"""`genforge data prepare`: raw files -> clean, PII-scrubbed, deduplicated train.jsonl / val.jsonl.

The pipeline, and who does what:
  main process   read + decode files (readers.py) -> chunks of ~1 MB of documents
  worker pool    per document: clean_text -> quality filters -> scrub_pii -> split hash; per chunk, in
                 a few numpy passes: the n-gram repetition bound, MinHash signatures, LSH band keys
  main process   DedupIndex.add in input order (the first copy wins: dict lookups only) -> append to
                 train/val JSONL, one write per chunk

Speed: work that numpy can do is done once per chunk, not per document (`chunk_signatures`,
`chunk_band_keys`, `ngram_repeat_bounds`): on corpora of short documents the ~15 numpy calls per
document cost more than the arithmetic. The main process is the serial part, so it does only what
must be in input order. `benchmarks/bench_data.py` compares prepare + pack with `datasets` + datasketch.

Why memory stays bounded: the readers stream; at most `2 * workers + 2` chunks are in flight (an
apply_async window, because `Pool.imap` would read the whole input ahead); output is appended as it
comes. What grows is the dedup index, ~1.6 KB per *kept* document (see dedup.py), so about 1.6 GB per
million kept documents; `--no-dedup` removes it.

The train/val split hashes seed + final text, so it does not depend on input order or worker count,
and a document lands in the same split whenever it reappears.

Resuming (a 1 GB corpus takes ~10 min): every CHECKPOINT_SECONDS the partial outputs are synced and
their extent recorded (partial.py); `--resume` continues after the input documents they cover, with the
dedup index refilled, and ends with the outputs an uninterrupted run would have written.

Larger than one machine: run `prepare` per shard of the input on each machine (same seed, local dedup),
then one global dedup pass over the shards' outputs: the pure functions here (`clean_text`,
`scrub_pii`, `doc_signature`) map unchanged onto a distributed engine (Ray Data `map_batches`, Spark,
or datatrove's MinHash stages) when one machine cannot hold the index. See docs/data.md.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import multiprocessing
import os
import signal
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from genforge.artifacts import (
    begin_output,
    check_output,
    check_resume_folder,
    sha256_tree,
    write_json,
    write_manifest,
)
from genforge.config import to_dict
from genforge.data.clean import clean_text, ngram_repeat_bounds, quality_reason
from genforge.data.config import PrepareConfig
from genforge.data.dedup import DedupIndex, chunk_band_keys, chunk_signatures
from genforge.data.pack import PACK_MANIFEST
from genforge.data.partial import PROGRESS, PartialOutput
from genforge.data.pii import KINDS, scrub_pii
from genforge.data.readers import find_files, iter_documents
from genforge.errors import DataError, GenforgeError, Stopped

NUM_PERM = 128
CHUNK_CHARS = 1 << 20  # ~1 MB of text per task: large enough to amortise pickling, small enough to stream
CHUNK_DOCS = 2048
REASONS = ("binary", "decode_error", "bad_record", "empty", "too_short", "too_long", "symbol_ratio",
           "repetition", "exact_dup", "near_dup")
CHECKPOINT_SECONDS = 10.0  # at most this much work is redone after a kill (data prepare --resume)
FREE_TO_CHANGE = {"out", "resume", "workers"}  # a resume may change these: they do not change the output


def in_val(text: str, seed: int, val_fraction: float) -> bool:
    """Deterministic split: a document is in val iff hash(seed, text) falls below val_fraction."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "big") < val_fraction * 2**64


def process_chunk(texts: list[str], cfg: PrepareConfig, bands_rows: tuple[int, int] | None = None
                  ) -> tuple[list[tuple], np.ndarray, np.ndarray | None, dict[str, int]]:
    """Worker task: clean, filter, scrub and sign a chunk of documents.

    Returns one entry per document, either (None, reason) or (json_text, utf8_bytes, exact_key, in_val);
    the MinHash signatures of the kept entries as one (kept, NUM_PERM) array and, given `bands_rows`, their
    LSH band keys as one (kept, bands) array, so the main process only looks keys up; and PII counts by
    kind. The text comes back already JSON-escaped so the main process only has to concatenate.
    """
    kept: list[str] = []
    reasons: list[str | None] = []
    pii: Counter = Counter()
    cleaned = [clean_text(raw) for raw in texts]
    # The exact n-gram test (a Python set per document) runs only where the chunk-wide upper bound exceeds
    # the limit: a handful of documents per corpus. Elsewhere its answer is known to be "pass".
    suspects = ([False] * len(cleaned) if cfg.max_ngram_repeat >= 1.0
                else (ngram_repeat_bounds(cleaned) > cfg.max_ngram_repeat).tolist())
    for text, suspect in zip(cleaned, suspects, strict=True):
        reason = quality_reason(text, cfg.min_chars, cfg.max_chars, cfg.max_symbol_ratio, cfg.max_line_repeat,
                                cfg.max_ngram_repeat if suspect else 1.0)
        reasons.append(reason)
        if reason:
            continue
        if cfg.pii:
            text, hits = scrub_pii(text)
            pii.update(hits)
        kept.append(text)
    bands = None
    if cfg.dedup:  # one batched computation for the whole chunk: per-document numpy calls would dominate
        keys, sigs = chunk_signatures(kept, num_perm=NUM_PERM)
        if bands_rows:
            bands = chunk_band_keys(sigs, *bands_rows)
    else:
        keys, sigs = [None] * len(kept), np.empty((0, NUM_PERM), dtype=np.uint32)
    out: list[tuple] = []
    done = zip(kept, keys, strict=True)
    for reason in reasons:
        if reason:
            out.append((None, reason))
            continue
        text, key = next(done)
        out.append((json.dumps(text, ensure_ascii=False), len(text.encode("utf-8")), key,
                    in_val(text, cfg.seed, cfg.val_fraction)))
    return out, sigs, bands, dict(pii)


def _chunks(docs: Iterable[tuple[int, str]]) -> Iterator[tuple[list[int], list[str]]]:
    sources: list[int] = []
    texts: list[str] = []
    size = 0
    for source, text in docs:
        sources.append(source)
        texts.append(text)
        size += len(text)
        if size >= CHUNK_CHARS or len(texts) >= CHUNK_DOCS:
            yield sources, texts
            sources, texts, size = [], [], 0
    if texts:
        yield sources, texts


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the main process, which stops the pool (no traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _processed(chunks: Iterator[tuple[list[int], list[str]]], cfg: PrepareConfig, workers: int,
               bands_rows: tuple[int, int] | None) -> Iterator[tuple[list[int], tuple]]:
    """(sources, process_chunk result) per chunk, in input order; a bounded window of chunks in flight."""
    if workers == 1:
        for sources, texts in chunks:
            yield sources, process_chunk(texts, cfg, bands_rows)
        return
    # spawn, not fork: the parent may hold threads (tqdm's monitor) and fork would copy their locks.
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_ignore_sigint) as pool:
        pending: collections.deque = collections.deque()
        for sources, texts in chunks:
            pending.append((sources, pool.apply_async(process_chunk, (texts, cfg, bands_rows))))
            if len(pending) > 2 * workers + 1:
                sources, result = pending.popleft()
                yield sources, result.get()
        while pending:
            sources, result = pending.popleft()
            yield sources, result.get()


def fingerprint(cfg: PrepareConfig, files: list[Path]) -> dict[str, Any]:
    """What the output depends on, recorded when a run starts and compared on --resume: every setting but
    where it goes and how many workers make it, and the contents of the input files."""
    settings = {k: v for k, v in to_dict(cfg).items() if k not in FREE_TO_CHANGE}
    return {**settings, "inputs_sha256": sha256_tree(files)}


def prepare(cfg: PrepareConfig) -> dict:
    """Run the pipeline over `cfg.inputs` into `cfg.out`; returns the stats written to stats.json."""
    out = Path(cfg.out)
    files = find_files(cfg.inputs, exclude=out)
    if not files:
        raise DataError(f"no files found in {', '.join(map(str, cfg.inputs))}")
    check_output(out, "data.prepare")
    check_resume_folder(out, resume=cfg.resume, started=(out / PROGRESS).is_file(), marker=PROGRESS)
    partial = PartialOutput(out, fingerprint(cfg, files), num_perm=NUM_PERM, dedup=cfg.dedup, resume=cfg.resume)
    started = time.time()
    bytes_in = sum(f.stat().st_size for f in files)
    # A pool costs ~1 s to start: small inputs are faster in-process unless --workers says otherwise.
    workers = cfg.workers or max(1, min(os.cpu_count() or 1, bytes_in // (4 * CHUNK_CHARS)))
    sources = [json.dumps(str(f), ensure_ascii=False) for f in files]
    index = DedupIndex(threshold=cfg.near_dup_threshold, num_perm=NUM_PERM) if cfg.dedup else None
    tally = partial.open(index)
    counts, removed = tally.counts, tally.removed
    unread: Counter = Counter()  # what the readers skip: a resumed run reads every file again, so not carried over

    from tqdm.auto import tqdm

    try:
        with partial, tqdm(total=bytes_in, unit="B", unit_scale=True, desc="prepare", disable=None) as bar:
            docs = iter_documents(files, split_by=cfg.split_by, text_field=cfg.text_field, progress=bar.update,
                                  skipped=unread)
            docs = itertools.islice(docs, counts["docs_in"], None)  # those an interrupted run finished
            bands_rows = (index.bands, index.rows) if index is not None else None
            last = time.monotonic()
            for chunk_sources, (results, sigs, bands, hits) in _processed(_chunks(docs), cfg, workers, bands_rows):
                tally.pii.update(hits)
                counts["docs_in"] += len(results)
                lines: dict[bool, list[str]] = {False: [], True: []}  # by is_val; written once per chunk
                # sigs (and bands) have one row per document that passed the filters
                band_rows = bands.tolist() if bands is not None else [None] * len(sigs)
                row = 0
                kept_keys, kept_rows = [], []
                for source, entry in zip(chunk_sources, results, strict=True):
                    if entry[0] is None:
                        removed[entry[1]] += 1
                        continue
                    json_text, nbytes, key, is_val = entry
                    if index is not None:
                        dup = index.add(key, sigs[row], band_rows[row])
                        row += 1
                        if dup:
                            removed[dup] += 1
                            continue
                        kept_keys.append(key)
                        kept_rows.append(row - 1)
                    lines[is_val].append(f'{{"text": {json_text}, "source": {sources[source]}}}\n')
                    counts["bytes_out"] += nbytes
                partial.append(lines[False], lines[True], kept_keys, sigs[kept_rows])
                counts["train_docs"] += len(lines[False])
                counts["val_docs"] += len(lines[True])
                if time.monotonic() - last >= CHECKPOINT_SECONDS:
                    partial.checkpoint(tally, time.time() - started)
                    last = time.monotonic()
    except GenforgeError:
        partial.discard()
        raise
    except KeyboardInterrupt:  # said here: the CLI's generic line would offer a rerun without --resume, refused
        raise Stopped(f"stopped by Ctrl-C: {out} keeps the documents done up to its last checkpoint; continue with "
                      "the same command plus --resume", signal.SIGINT) from None
    removed += unread
    docs_out = counts["train_docs"] + counts["val_docs"]
    if counts["train_docs"] == 0:  # the inputs make no data set
        partial.discard()
        why = ", ".join(f"{k}: {v}" for k, v in removed.most_common(3)) or "no documents read"
        if docs_out:
            raise DataError(f"all {docs_out} documents fell in the validation split; lower --val-fraction")
        raise DataError(f"no documents left after filtering {counts['docs_in']} read ({why}); "
                        "check --split-by, --text-field and --min-chars")
    # The inputs gave documents: only now may an earlier artifact here stop being finished. Its pack.json goes
    # too: its tokens no longer match the new text, so pretraining asks for a new pack.
    begin_output(out, "data.prepare")
    (out / PACK_MANIFEST).unlink(missing_ok=True)
    partial.finish()

    seconds = tally.seconds + time.time() - started
    stats = {
        "files": len(files), "docs_in": counts["docs_in"], "docs_out": docs_out,
        "train_docs": counts["train_docs"], "val_docs": counts["val_docs"],
        "removed": {r: removed[r] for r in REASONS} | {r: n for r, n in removed.items() if r not in REASONS},
        "pii": {k: tally.pii[k] for k in KINDS},
        "bytes_in": bytes_in, "bytes_out": counts["bytes_out"], "seconds": round(seconds, 3),
        "mb_per_s": round(bytes_in / 1e6 / max(seconds, 1e-9), 3), "workers": workers,
    }
    write_json(out / "stats.json", stats)
    write_manifest(out, "data.prepare", cfg, inputs=files, started=started, metrics=stats)
    _print_summary(stats, out)
    return stats


def _print_summary(stats: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"data prepare -> {out}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("documents in / out", f"{stats['docs_in']:,} / {stats['docs_out']:,}")
    table.add_row("train / val", f"{stats['train_docs']:,} / {stats['val_docs']:,}")
    table.add_row("removed", ", ".join(f"{k} {v:,}" for k, v in stats["removed"].items() if v) or "none")
    table.add_row("PII replaced", ", ".join(f"{k} {v:,}" for k, v in stats["pii"].items() if v) or "none")
    table.add_row("MB in / out", f"{stats['bytes_in'] / 1e6:,.2f} / {stats['bytes_out'] / 1e6:,.2f}")
    table.add_row("time", f"{stats['seconds']:.1f} s ({stats['mb_per_s']:.2f} MB/s, {stats['workers']} workers)")
    Console().print(table)
