"""`genforge tokenizer train`: byte-level BPE from a prepared data folder, saved as a Hugging Face tokenizer.

Byte-level with no normaliser and `add_prefix_space=False`, so `decode(encode(x)) == x` for any Unicode
text (CJK, emoji, RTL, leading spaces, tabs): nothing is ever unknown and nothing is rewritten. The
special tokens have fixed ids (the artifact contract) and no post-processor adds BOS/EOS: `data pack`
appends EOS itself and later stages decide about BOS. Heavy imports (tokenizers, transformers) happen
inside the functions, so importing this module for `SPECIAL_TOKENS` stays instant.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

from genforge.artifacts import (
    CONFIG,
    atomic_write_text,
    begin_output,
    check_output,
    read_manifest,
    write_manifest,
)
from genforge.config import dump_yaml
from genforge.errors import ConfigError, DataError

# Fixed ids 0..5, in this order (the artifact contract shared by every stage).
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|mask|>", "<|im_start|>", "<|im_end|>"]
PAD, BOS, EOS, MASK, IM_START, IM_END = SPECIAL_TOKENS
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_BATCH = 1000  # texts per item handed to the Rust trainer: fewer Python->Rust crossings


def parse_text(line: str | bytes, path: Path, lineno: int) -> str | None:
    """The `text` of one prepared-data JSONL line (None for a blank line); anything else is a DataError."""
    if not line.strip():
        return None
    try:
        text = json.loads(line)["text"]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{lineno} is not UTF-8 text ({e.reason} at byte {e.start} of the line): save it as "
                        "UTF-8, or rerun `genforge data prepare`, which writes it so") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DataError(f"{path}:{lineno} is not a JSON object with a \"text\" field") from None
    if not isinstance(text, str):
        raise DataError(f"{path}:{lineno}: \"text\" must be a string, got {type(text).__name__}")
    return text


def iter_texts(path: Path, limit: int | None = None) -> Iterator[str]:
    """The texts of a prepared-data JSONL file, streamed (at most `limit` documents).

    Lines are read as bytes and decoded one by one, so text that is not UTF-8 is reported with its line.
    """
    n = 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if limit is not None and n >= limit:
                return
            text = parse_text(line, path, lineno)
            if text is not None:
                n += 1
                yield text


def count_lines(path: Path) -> int:
    """Number of lines, read in 1 MB blocks (a length hint for progress bars without parsing JSON)."""
    n = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            n += block.count(b"\n")
    return n


def _batches(texts: Iterator[str], size: int = _BATCH) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def build_bpe(texts: Iterator[str], vocab_size: int, min_frequency: int = 2, length: int | None = None,
              show_progress: bool = True):
    """Train a raw `tokenizers.Tokenizer` (byte-level BPE, special tokens at ids 0..5) on a text stream."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show_progress)
    n_batches = None if length is None else -(-length // _BATCH)
    tok.train_from_iterator(_batches(texts), trainer, length=n_batches)
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(token) == i, f"special token {token} did not get id {i}"
    return tok


def wrap_for_transformers(tok, model_max_length: int = 2048):
    """The HF fast tokenizer around `tok`: named special tokens + ChatML chat template."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, mask_token=MASK,
        extra_special_tokens=[IM_START, IM_END], chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length, clean_up_tokenization_spaces=False)


def bytes_per_token(tok, texts: list[str]) -> float:
    """Compression ratio: UTF-8 bytes per token over `texts` (higher = fewer tokens per byte)."""
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
    return n_bytes / max(n_tokens, 1)


def _val_sample(path: Path, max_bytes: int = 8 << 20) -> list[str]:
    """Up to `max_bytes` of val.jsonl text (enough for a stable compression estimate)."""
    out, total = [], 0
    if path.is_file():
        for text in iter_texts(path):
            out.append(text)
            total += len(text)
            if total >= max_bytes:
                break
    return out


def train_tokenizer(cfg) -> Path:
    """Train on `cfg.data`/train.jsonl and write the tokenizer folder `cfg.out` (+ manifest "tokenizer")."""
    data_manifest = read_manifest(cfg.data, stage="data.prepare")
    if Path(cfg.out).resolve() == Path(cfg.data).resolve():
        raise ConfigError(f"--out {cfg.out} is the data folder itself; give the tokenizer its own folder")
    train_path = Path(cfg.data) / "train.jsonl"
    if not train_path.is_file():
        raise DataError(f"{train_path} is missing: rerun `genforge data prepare`")
    n_docs = count_lines(train_path)
    if cfg.max_docs is not None:
        n_docs = min(n_docs, cfg.max_docs)
    if n_docs == 0:
        raise DataError(f"{train_path} holds no documents")
    check_output(cfg.out, "tokenizer")
    started = time.time()

    t0 = time.perf_counter()
    tok = build_bpe(iter_texts(train_path, cfg.max_docs), cfg.vocab_size, cfg.min_frequency, length=n_docs)
    train_seconds = time.perf_counter() - t0
    hf = wrap_for_transformers(tok, cfg.model_max_length)
    val, measured_on = _val_sample(Path(cfg.data) / "val.jsonl"), "val.jsonl"
    if not val:  # a prepare run with val_fraction 0
        val, measured_on = list(iter_texts(train_path, 1000)), "train.jsonl"
    begin_output(cfg.out, "tokenizer")  # only now, with the data read: bad data leaves an earlier tokenizer in --out whole
    # the config before the tokenizer files: a first run killed before its manifest then reads as an unfinished
    # genforge run (refused by `data pack`), not as a complete Hugging Face tokenizer folder
    atomic_write_text(Path(cfg.out) / CONFIG, dump_yaml(cfg))
    hf.save_pretrained(str(cfg.out))
    metrics = {
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "requested_vocab_size": cfg.vocab_size,
        "train_docs": n_docs,
        "train_seconds": round(train_seconds, 3),
        "bytes_per_token": round(bytes_per_token(tok, val), 4),
        "compression_measured_on": measured_on,
    }
    write_manifest(cfg.out, "tokenizer", cfg, inputs=[train_path], parent=data_manifest, metrics=metrics,
                   started=started)
    _summary(cfg.out, metrics)
    return Path(cfg.out)


def _summary(out: Path, metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"tokenizer -> {out}", show_header=False)
    table.add_row("vocab size", f"{metrics['vocab_size']:,} (asked {metrics['requested_vocab_size']:,})")
    table.add_row("trained on", f"{metrics['train_docs']:,} documents in {metrics['train_seconds']:.1f}s")
    table.add_row("bytes per token", f"{metrics['bytes_per_token']:.2f} ({metrics['compression_measured_on']})")
    Console(stderr=True).print(table)
