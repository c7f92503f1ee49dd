"""Tiny-shakespeare language modelling in a fixed wall-clock budget: validation bits per byte.

The real genforge chain (data prepare -> tokenizer train -> data pack -> pretrain) on the nanoGPT
split of tiny-shakespeare: the first 90% of the bytes train, the last 10% validate. Each part is
prepared as one document (split_by=file, filters off) and the validation part becomes val.jsonl, so the
validation text is exactly nanoGPT's. Bits per byte is tokenizer-independent, so the number compares
directly with character-level models.

Baseline: nanoGPT's shakespeare-char on CPU reaches 2.72 bpb in 3.5 minutes and 2.29 at best (the
reference figures); `--baseline` also trains a byte-level model (vocab 262: bytes + specials, the
nanoGPT char setting) with the same engine and budget in this run. Goal: <= 2.1 bpb in 10 minutes.

    .venv/bin/python benchmarks/bench_shakespeare.py                 # 10 minutes
    .venv/bin/python benchmarks/bench_shakespeare.py --minutes 1     # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from genforge.data.config import PackConfig, PrepareConfig, TokenizerConfig  # noqa: E402
from genforge.data.pack import pack  # noqa: E402
from genforge.data.prepare import prepare  # noqa: E402
from genforge.data.tokenizer import MIN_VOCAB_SIZE, train_tokenizer  # noqa: E402
from genforge.train.config import PretrainConfig  # noqa: E402
from genforge.train.pretrain import pretrain  # noqa: E402

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"
NANOGPT_CPU = {"3.5 min": 2.72, "best": 2.29}


def prepare_split(text: str, out: Path, work: Path) -> None:
    """`data prepare` on one document, all filters off (the benchmark text is already clean)."""
    (work / "doc.txt").write_text(text, encoding="utf-8")
    prepare(PrepareConfig(inputs=[work / "doc.txt"], out=out, split_by="file", val_fraction=0.0, min_chars=1,
                          max_chars=10**9, max_symbol_ratio=1.0, max_line_repeat=1.0, max_ngram_repeat=1.0,
                          pii=False, dedup=False, workers=1))


def packed_data(work: Path, vocab_size: int) -> Path:
    """A packed folder: nanoGPT's 90/10 byte split, a BPE tokenizer of `vocab_size` trained on the train part."""
    raw = SHAKESPEARE.read_bytes()
    cut = int(len(raw) * 0.9)
    data = work / f"data-{vocab_size}"
    prepare_split(raw[:cut].decode("utf-8"), data, work)
    prepare_split(raw[cut:].decode("utf-8"), work / "val-part", work)
    shutil.copy(work / "val-part" / "train.jsonl", data / "val.jsonl")
    train_tokenizer(TokenizerConfig(data=data, out=work / f"tok-{vocab_size}", vocab_size=vocab_size))
    pack(PackConfig(data=data, tokenizer=work / f"tok-{vocab_size}", workers=1))
    return data


def train(data: Path, out: Path, args, **overrides) -> dict:
    cfg = PretrainConfig(data=data, out=out, objective="clm", preset=args.preset, max_steps=10**9,
                         max_minutes=args.minutes, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
                         min_lr=args.lr / 10, warmup_steps=args.warmup_steps, weight_decay=args.weight_decay,
                         dropout=args.dropout,
                         eval_every=args.eval_every, eval_batches=0, save_every=0, log_every=25,
                         hidden_size=args.hidden_size, num_layers=args.num_layers, num_heads=args.num_heads,
                         compile=args.compile)
    cfg = replace(cfg, **overrides)
    cfg.check()
    run = pretrain(cfg)
    return json.loads((run / "manifest.json").read_text())["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget per model")
    parser.add_argument("--vocab", type=int, default=1024, help="BPE vocabulary size")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--hidden-size", type=int, default=0, help="with --preset custom")
    parser.add_argument("--num-layers", type=int, default=0, help="with --preset custom")
    parser.add_argument("--num-heads", type=int, default=0, help="with --preset custom")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--weight-decay", type=float, default=0.2)
    parser.add_argument("--dropout", type=float, default=0.2, help="attention dropout: 1 MB of text overfits fast")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--baseline", action="store_true", help="also train a byte-level model in this run")
    parser.add_argument("--work", type=Path, default=None, help="keep the data and runs here (default: temp)")
    args = parser.parse_args()
    if not SHAKESPEARE.is_file():
        sys.exit(f"tiny-shakespeare not found at {SHAKESPEARE}")

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = {}
        if args.baseline:
            byte_data = packed_data(work, MIN_VOCAB_SIZE)
            results["byte-level"] = train(byte_data, work / "run-bytes", args)
        results[f"bpe-{args.vocab}"] = train(packed_data(work, args.vocab), work / "run-bpe", args)

    print(f"\ntiny-shakespeare, {args.minutes:g} min per model, preset {args.preset}, batch {args.batch_size} x "
          f"{args.seq_len}, lr {args.lr:g}, weight decay {args.weight_decay:g}, dropout {args.dropout:g}, "
          f"compile {args.compile}")
    for name, bpb in NANOGPT_CPU.items():
        print(f"  nanoGPT char (reference, {name}): {bpb:.3f} bpb")
    for name, m in results.items():
        print(f"  genforge {name}: {m['val_bits_per_byte']:.3f} bpb (val loss {m['val_loss']:.3f}, "
              f"{m['steps']} steps, {m['tokens_per_s']:.0f} tok/s, {m['params'] / 1e6:.2f} M params)")
    ours = results[f"bpe-{args.vocab}"]["val_bits_per_byte"]
    print(f"ratio nanoGPT-CPU-best / genforge bpb: {NANOGPT_CPU['best'] / ours:.2f}x (goal: <= 2.1 bpb in 10 min)")


if __name__ == "__main__":
    main()
