"""Configs of the data stage. Light on purpose: imported by the CLI at start-up, so no numpy/torch here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genforge.config import Config, field
from genforge.errors import ConfigError


@dataclass
class PrepareConfig(Config):
    """`genforge data prepare`: raw files -> clean, PII-scrubbed, deduplicated train/val JSONL."""

    inputs: list[Path] = field(default_factory=list, argument=True,
                               help="input files or folders (searched recursively): .txt .md .jsonl .json .csv "
                                    ".tsv .parquet .html; any other file is read as plain text")
    out: Path = field(Path("data"), help="output folder")
    split_by: str = field("paragraph", choices=("paragraph", "line", "file"),
                          help="how plain-text and HTML files are cut into documents (paragraph = at blank lines)")
    text_field: str = field("text",
                            help="column/key holding the text in .jsonl/.json/.csv/.tsv/.parquet files")
    val_fraction: float = field(0.05, help="fraction of documents in val.jsonl (chosen by a hash of seed and text)")
    seed: int = field(0, help="seed of the train/val split hash")
    min_chars: int = field(20, help="drop documents shorter than this many characters after cleaning")
    max_chars: int = field(1_000_000, help="drop documents longer than this many characters")
    max_symbol_ratio: float = field(0.2, help="drop documents whose share of symbol characters (#, |, {, ...) "
                                               "among non-space characters is above this")
    max_line_repeat: float = field(0.3, help="drop documents where repeated lines hold more than this share "
                                             "of the characters")
    max_ngram_repeat: float = field(0.3, help="drop documents where repeated 10-character n-grams make up more "
                                              "than this share of all n-grams")
    pii: bool = field(True, help="replace e-mails, phones, Chinese ID, IBAN and card numbers, IPs by <EMAIL> "
                                 "<PHONE> <ID> <IBAN> <CARD> <IP>")
    dedup: bool = field(True, help="drop exact and near-duplicate documents (the first copy is kept)")
    near_dup_threshold: float = field(0.8, help="estimated Jaccard similarity of 5-character shingles above which "
                                                "a document is a near duplicate")
    workers: int | None = field(None, help="worker processes (default: one per ~4 MB of input, at most the CPU "
                                           "cores; under ~8 MB one, in-process)")
    resume: bool = field(False, help="continue the interrupted run in --out after the documents it had finished "
                                     "(prepare.partial.json); the same inputs and settings are required")

    def check(self) -> None:
        if not self.inputs:
            raise ConfigError("give at least one INPUT file or folder")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1); got {self.val_fraction}")
        if not 0.0 < self.near_dup_threshold <= 1.0:
            raise ConfigError(f"near_dup_threshold must be in (0, 1]; got {self.near_dup_threshold}")
        if self.min_chars < 0 or self.max_chars <= self.min_chars:
            raise ConfigError(f"need 0 <= min_chars < max_chars; got {self.min_chars} and {self.max_chars}")
        for name in ("max_symbol_ratio", "max_line_repeat", "max_ngram_repeat"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1] (1 disables the filter); got {value}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be >= 1; got {self.workers}")


@dataclass
class TokenizerConfig(Config):
    """`genforge tokenizer train`: a byte-level BPE tokenizer (HF folder) from a prepared data folder."""

    data: Path = field(Path("data"), help="prepared data folder (output of `genforge data prepare`)")
    out: Path = field(Path("tokenizer"), help="output folder: a Hugging Face tokenizer")
    vocab_size: int = field(8192, help="vocabulary size, including the 256 byte symbols and the special tokens")
    min_frequency: int = field(2, help="a pair must occur at least this often to be merged")
    max_docs: int | None = field(None, help="train on at most this many documents of train.jsonl (default: all)")
    model_max_length: int = field(2048, help="longest sequence (tokens) the tokenizer reports to models")

    def check(self) -> None:
        from genforge.data.tokenizer import MIN_VOCAB_SIZE  # light module-level constant, no heavy imports

        if self.vocab_size < MIN_VOCAB_SIZE:
            raise ConfigError(f"vocab_size must be at least {MIN_VOCAB_SIZE} (256 byte symbols + special tokens); "
                              f"got {self.vocab_size}")
        if self.vocab_size > 2**31 - 1:
            raise ConfigError(f"vocab_size {self.vocab_size} is too large")
        if self.min_frequency < 1:
            raise ConfigError(f"min_frequency must be >= 1; got {self.min_frequency}")
        if self.max_docs is not None and self.max_docs < 1:
            raise ConfigError(f"max_docs must be >= 1; got {self.max_docs}")
        if self.model_max_length < 1:
            raise ConfigError(f"model_max_length must be >= 1; got {self.model_max_length}")


@dataclass
class PackConfig(Config):
    """`genforge data pack`: train/val.jsonl -> flat token files train.bin/val.bin (+ pack.json)."""

    data: Path = field(Path("data"), help="prepared data folder; train.bin, val.bin and pack.json are added to it")
    tokenizer: Path = field(Path("tokenizer"), help="tokenizer folder: `genforge tokenizer train` output, or a "
                            "local Hugging Face model folder (its own tokenizer, to continue pretraining it)")
    workers: int | None = field(None, help="worker processes (default: all CPU cores; 1 for inputs under ~4 MB)")
    batch_docs: int = field(512, help="documents per encoding batch (memory is bounded by a few batches)")

    def check(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be >= 1; got {self.workers}")
        if self.batch_docs < 1:
            raise ConfigError(f"batch_docs must be >= 1; got {self.batch_docs}")
