"""`genforge data pack`: encode train/val.jsonl into flat token files for training (nanoGPT-style memmaps).

Each document's tokens are followed by EOS; the file is a bare numpy array (uint16 when the vocabulary
fits, else uint32) so a trainer reads it with one `np.memmap`. The prepared-data folder becomes
self-contained: the tokenizer is copied into DIR/tokenizer/ and `pack.json` (written last) records
dtype, counts, UTF-8 bytes (for bits-per-byte) and the tokenizer's hash and manifest.

Parallelism: a pool of worker processes, each parsing JSON, encoding with a single-threaded `tokenizers`
instance (`encode_batch_fast`: no offsets, which packing does not need) and building the array; the main
process only reads raw lines and appends arrays in order. Processes also parallelise the Python work
(JSON, byte counts, arrays), so they scale with cores; small inputs run inline, where starting workers
would cost more than it saves. The Rust encoder is ~80% of the time (profiled), so there is little left
to win here. `benchmarks/bench_data.py` measures prepare + pack against `datasets.map` with the HF tokenizer.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from genforge.artifacts import (
    CONFIG,
    MANIFEST,
    atomic_open,
    read_manifest,
    remove_dead_temps,
    sha256_tree,
    write_manifest,
)
from genforge.data.tokenizer import EOS, iter_texts, parse_text
from genforge.errors import ArtifactError, DataError
from genforge.models.load import check_finished_run

PACK_MANIFEST = "pack.json"
SPLITS = ("train", "val")
_INLINE_BYTES = 4 << 20  # inputs smaller than this are encoded in-process (worker start-up ~0.5 s each)
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".msgpack", ".gguf"}

_worker_tok = None  # the tokenizer of a worker process (set by _init_worker)


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (vocab <= 65535), else uint32: half the disk and memory bandwidth."""
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


def load_tokenizer(path: Path):
    """The raw `tokenizers.Tokenizer`, set to treat special-token strings in the data as plain text, with
    no padding and no truncation.

    Without `encode_special_tokens`, a document containing the literal text "<|eos|>" would get a real
    EOS id in the middle and silently split in two. A model folder's tokenizer.json may carry the padding
    and truncation it was exported with (sentence-transformers' MiniLM: fixed to 128), which would cut
    every document at 128 tokens and fill the rest of short ones with [PAD]; documents are packed whole.
    """
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust parser raises a bare Exception for a corrupt or foreign file
        raise ArtifactError(f"{path} is not a valid tokenizer file ({str(e).splitlines()[0]}): re-copy it or "
                            "retrain it with `genforge tokenizer train`") from None
    tok.encode_special_tokens = True
    tok.no_padding()
    tok.no_truncation()
    return tok


def packed_tokenizer(data: Path):
    """The Hugging Face tokenizer a packed folder was made with (DIR/tokenizer/, copied there by `pack`).

    Read from disk only: a missing or damaged copy is one line saying to pack again, not transformers'
    attempt to reach the Hub or its traceback."""
    from transformers import AutoTokenizer

    folder = Path(data) / "tokenizer"
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ArtifactError(f"{folder} cannot be loaded ({reason}): pack the data again with "
                            "`genforge data pack`") from None


def document_separator(tok_dir: Path, tok) -> int:
    """The id appended after each document: genforge's EOS, else the tokenizer's own EOS, else its SEP.

    Any local Hugging Face model folder can be a `--tokenizer`, so that continued pretraining (`pretrain
    --model`) sees the model's own token ids; BERT-style encoders have no EOS and end segments with [SEP].
    """
    eos_id = tok.token_to_id(EOS)
    if eos_id is not None:
        return eos_id
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(tok_dir)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{tok_dir}: cannot load its tokenizer ({e})") from None
    for token in (hf.eos_token, hf.sep_token):
        if token is not None and tok.token_to_id(token) is not None:
            return tok.token_to_id(token)
    raise ArtifactError(f"{tok_dir} has no end-of-document token ({EOS}, an EOS or a SEP token): "
                        "train a tokenizer with `genforge tokenizer train`")


def encode_docs(tok, texts: list[str], dtype: np.dtype, eos_id: int) -> np.ndarray:
    """One flat array: the tokens of each text followed by `eos_id`."""
    encodings = tok.encode_batch_fast(texts, add_special_tokens=False)
    out = np.empty(sum(len(e.ids) for e in encodings) + len(encodings), dtype=dtype)
    pos = 0
    for e in encodings:
        ids = e.ids
        out[pos : pos + len(ids)] = ids
        pos += len(ids)
        out[pos] = eos_id
        pos += 1
    return out


def _init_worker(tokenizer_file: str) -> None:
    global _worker_tok
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per process: the pool is the parallelism
    _worker_tok = load_tokenizer(Path(tokenizer_file))


def _encode_lines(tok, lines: list[bytes], path: Path, first_lineno: int, dtype: np.dtype,
                  eos_id: int) -> tuple[np.ndarray, int, int]:
    """(tokens, documents, UTF-8 bytes of text) for a batch of raw JSONL lines."""
    texts = [t for i, line in enumerate(lines) if (t := parse_text(line, path, first_lineno + i)) is not None]
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return encode_docs(tok, texts, dtype, eos_id), len(texts), n_bytes


def _worker_encode(lines: list[bytes], path: Path, first_lineno: int, dtype: np.dtype,
                   eos_id: int) -> tuple[np.ndarray, int, int]:
    return _encode_lines(_worker_tok, lines, path, first_lineno, dtype, eos_id)


def _line_batches(path: Path, batch_docs: int) -> Iterator[tuple[int, list[bytes], int]]:
    """(first line number, raw lines, their byte length) in batches, read lazily."""
    with open(path, "rb") as f:
        batch: list[bytes] = []
        first, size = 1, 0
        for lineno, line in enumerate(f, 1):
            batch.append(line)
            size += len(line)
            if len(batch) == batch_docs:
                yield first, batch, size
                batch, first, size = [], lineno + 1, 0
        if batch:
            yield first, batch, size


def encode_file(src: Path, dst: Path, tokenizer_file: Path, dtype: np.dtype, eos_id: int, workers: int,
                batch_docs: int = 512, inline_below: int = _INLINE_BYTES) -> dict[str, int]:
    """Encode one JSONL file into `dst` (atomically: a failure leaves no partial `dst`).

    Returns counts of tokens, docs and text bytes, and the number of processes that encoded: files smaller
    than `inline_below` bytes are encoded in this process whatever `workers` says.
    """
    from tqdm import tqdm

    counts = {"tokens": 0, "docs": 0, "bytes": 0, "workers": workers}

    def consume(result: tuple[np.ndarray, int, int], f) -> None:
        tokens, docs, n_bytes = result
        tokens.tofile(f)
        counts["tokens"] += tokens.size
        counts["docs"] += docs
        counts["bytes"] += n_bytes

    batches = _line_batches(src, batch_docs)
    if os.path.getsize(src) < inline_below:
        workers = counts["workers"] = 1
    with atomic_open(dst, "wb") as f, tqdm(total=os.path.getsize(src), unit="B", unit_scale=True,
                                           desc=f"pack {src.name}", leave=False) as bar:
        if workers == 1:
            tok = load_tokenizer(tokenizer_file)
            for first, lines, size in batches:
                consume(_encode_lines(tok, lines, src, first, dtype, eos_id), f)
                bar.update(size)
        else:
            # A bounded window of batches in flight keeps memory flat; results are written in order.
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                     initargs=(str(tokenizer_file),)) as pool:
                window: deque[tuple[Future, int]] = deque()
                for first, lines, size in batches:
                    window.append((pool.submit(_worker_encode, lines, src, first, dtype, eos_id), size))
                    if len(window) >= 2 * workers:
                        future, done = window.popleft()
                        consume(future.result(), f)
                        bar.update(done)
                while window:
                    future, done = window.popleft()
                    consume(future.result(), f)
                    bar.update(done)
    return counts


def _copy_tokenizer(src: Path, dst: Path) -> None:
    """Replace `dst` with a copy of the tokenizer files of `src` (copied beside it, then renamed); a model
    folder's weights stay behind."""
    if dst.exists() and dst.resolve() == src.resolve():
        return
    tmp = dst.parent / f".{dst.name}.{os.getpid()}.tmp"  # mkdir (not mkdtemp): normal permissions
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for p in src.iterdir():
            if p.is_file() and not p.name.startswith(".") and p.suffix not in _WEIGHT_SUFFIXES:
                shutil.copy2(p, tmp / p.name)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    remove_dead_temps(dst)  # a killed pack's copy


def pack(cfg) -> dict:
    """Write DIR/train.bin, DIR/val.bin, DIR/tokenizer/ and (last) DIR/pack.json; returns the pack manifest."""
    data, tok_dir = Path(cfg.data), Path(cfg.tokenizer)
    data_manifest = read_manifest(data, stage="data.prepare")
    if tok_dir.is_file():
        raise ArtifactError(f"{tok_dir} is a file; --tokenizer expects a folder: a `genforge tokenizer train` "
                            "folder or a model folder holding tokenizer.json")
    if not tok_dir.is_dir():
        raise ArtifactError(f"{tok_dir} does not exist")
    # a killed `tokenizer train` redo may hold the new tokenizer_config.json beside the old tokenizer.json
    check_finished_run(tok_dir, "tokenizer")
    tok_manifest = read_manifest(tok_dir) if (tok_dir / MANIFEST).is_file() else None
    tokenizer_file = tok_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ArtifactError(f"{tok_dir} has no tokenizer.json: give a `genforge tokenizer train` folder or a "
                            "Hugging Face model folder with a fast tokenizer")
    for split in SPLITS:
        if not (data / f"{split}.jsonl").is_file():
            raise DataError(f"{data / f'{split}.jsonl'} is missing: rerun `genforge data prepare`")
    if next(iter_texts(data / "train.jsonl", 1), None) is None:  # val may be empty (--val-fraction 0), train not
        raise DataError(f"{data / 'train.jsonl'} holds no documents: rerun `genforge data prepare`")
    tok = load_tokenizer(tokenizer_file)
    eos_id = document_separator(tok_dir, tok)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    dtype = token_dtype(vocab_size)
    workers = cfg.workers or len(os.sched_getaffinity(0))

    started = time.time()
    with contextlib.suppress(FileNotFoundError):  # the old pack.json no longer describes this folder
        (data / PACK_MANIFEST).unlink()
    counts = {split: encode_file(data / f"{split}.jsonl", data / f"{split}.bin", tokenizer_file, dtype, eos_id,
                                 workers, cfg.batch_docs) for split in SPLITS}
    _copy_tokenizer(tok_dir, data / "tokenizer")
    tok_files = [p for p in (data / "tokenizer").iterdir() if p.is_file() and p.name not in (MANIFEST, CONFIG)]
    seconds = time.time() - started
    total_bytes = sum(c["bytes"] for c in counts.values())
    extra = {
        "dtype": dtype.name, "vocab_size": vocab_size, "eos_id": eos_id,
        **{f"{s}_{k}": counts[s][k] for k in ("tokens", "bytes", "docs") for s in SPLITS},
        "tokenizer_sha256": sha256_tree(tok_files), "tokenizer_manifest": tok_manifest,
    }
    metrics = {"seconds": round(seconds, 3), "mb_per_s": round(total_bytes / 1e6 / max(seconds, 1e-9), 3),
               "bytes_per_token": round(total_bytes / max(sum(c["tokens"] - c["docs"] for c in counts.values()), 1), 4),
               "workers": max(c["workers"] for c in counts.values())}
    manifest = write_manifest(data, "data.pack", cfg, inputs=[data / f"{s}.jsonl" for s in SPLITS],
                              parent=data_manifest, metrics=metrics, started=started, extra=extra,
                              filename=PACK_MANIFEST)
    _summary(data, extra, metrics)
    return manifest


def _summary(data: Path, extra: dict, metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"data pack -> {data}")
    for col in ("split", "documents", "tokens", "text bytes", "bytes/token"):
        table.add_column(col, justify="right")
    for s in SPLITS:  # bytes per text token (EOS aside), as pack.json and `tokenizer train` report it
        text_tokens = extra[f"{s}_tokens"] - extra[f"{s}_docs"]
        table.add_row(s, f"{extra[f'{s}_docs']:,}", f"{extra[f'{s}_tokens']:,}", f"{extra[f'{s}_bytes']:,}",
                      f"{extra[f'{s}_bytes'] / max(text_tokens, 1):.2f}")
    table.caption = (f"{extra['dtype']}, vocab {extra['vocab_size']:,}, {metrics['mb_per_s']:.1f} MB/s "
                     f"with {metrics['workers']} worker(s)")
    Console(stderr=True).print(table)
