"""Dialogue SFT: the `small` decoder on the Bitext customer-support conversations.

The real genforge chain, all CPU: `data prepare` (questions + replies of the training split) ->
tokenizer -> pack -> `pretrain` the small decoder for a fixed budget -> `finetune sft` on the same
conversations as chats (system prompt, customer question, agent reply; loss on the reply only) ->
greedy replies to held-out questions. Split by the data README's convention: sha256(instruction)
buckets 0-7 train, 8 validation, 9 held out. Printed: SFT validation loss before/after (assistant
tokens only), training times and throughput, and 5 replies to held-out questions next to the
reference reply. `--lora-r 8` runs the SFT step as LoRA instead (trainable parameters, time, loss).

    .venv/bin/python benchmarks/bench_sft.py                       # ~10 minutes
    .venv/bin/python benchmarks/bench_sft.py --pretrain-minutes 0.5 --sft-minutes 0.5   # smoke
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from genforge.data.config import PackConfig, PrepareConfig, TokenizerConfig  # noqa: E402
from genforge.data.pack import pack  # noqa: E402
from genforge.data.prepare import prepare  # noqa: E402
from genforge.data.tokenizer import train_tokenizer  # noqa: E402
from genforge.finetune.config import SftConfig  # noqa: E402
from genforge.finetune.data import hash_bucket  # noqa: E402
from genforge.finetune.sft import sft  # noqa: E402
from genforge.generate import generate  # noqa: E402
from genforge.train.config import PretrainConfig  # noqa: E402
from genforge.train.pretrain import pretrain  # noqa: E402

BITEXT = (Path(__file__).resolve().parents[2] / "shared" / "data" / "bitext_customer_support"
          / "Bitext_Sample_Customer_Support_Training_Dataset.csv")
SYSTEM = "You are a customer support agent. Answer the customer's request helpfully."


def splits() -> dict[str, list[tuple[str, str]]]:
    with open(BITEXT, encoding="utf-8", newline="") as f:
        rows = [(r["instruction"].strip(), r["response"].strip()) for r in csv.DictReader(f)]
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    for row in rows:
        bucket = hash_bucket(row[0])
        parts["train" if bucket < 8 else "val" if bucket == 8 else "test"].append(row)
    return parts


def write_chats(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for question, reply in rows:
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question},
                        {"role": "assistant", "content": reply}]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-minutes", type=float, default=5.0)
    parser.add_argument("--sft-minutes", type=float, default=4.0)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--lora-r", type=int, default=0, help="SFT as LoRA of this rank (0 = full)")
    parser.add_argument("--work", type=Path, default=None, help="keep data and runs here (default: temp)")
    args = parser.parse_args()
    if not BITEXT.is_file():
        sys.exit(f"Bitext data not found at {BITEXT}")

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        parts = splits()
        corpus = work / "corpus.jsonl"
        with open(corpus, "w", encoding="utf-8") as f:
            for question, reply in parts["train"]:
                f.write(json.dumps({"text": f"{question}\n{reply}"}) + "\n")
        t0 = time.perf_counter()
        prepare(PrepareConfig(inputs=[corpus], out=work / "data", split_by="file", pii=False, workers=1))
        train_tokenizer(TokenizerConfig(data=work / "data", out=work / "tokenizer", vocab_size=args.vocab))
        pack(PackConfig(data=work / "data", tokenizer=work / "tokenizer", workers=1))
        data_seconds = time.perf_counter() - t0
        lm = pretrain(PretrainConfig(data=work / "data", out=work / "lm", objective="clm", preset="small",
                                     seq_len=args.seq_len, batch_size=16, lr=2e-3, min_lr=2e-4, warmup_steps=50,
                                     max_steps=10**9, max_minutes=args.pretrain_minutes, eval_every=200,
                                     save_every=0, log_every=25, dropout=0.1, weight_decay=0.1, compile=True))
        lm_metrics = json.loads((lm / "manifest.json").read_text())["metrics"]
        lora = {"lora_r": args.lora_r, "lora_alpha": 2.0 * args.lora_r, "lr": 2e-3} if args.lora_r else {}
        chat = sft(SftConfig(model=lm, data=write_chats(work / "train.jsonl", parts["train"]),
                             val_data=write_chats(work / "val.jsonl", parts["val"]), out=work / "chat",
                             seq_len=args.seq_len, batch_size=16, lr=lora.pop("lr", 5e-4), warmup_steps=20,
                             max_steps=10**9, max_minutes=args.sft_minutes, eval_every=100, log_every=20,
                             pack=True, **lora))
        sft_metrics = json.loads((chat / "manifest.json").read_text())["metrics"]
        held_out = parts["test"][:5]
        prompts = [json.dumps([{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}])
                   for q, _ in held_out]
        replies = generate(chat, prompts, chat=True, max_new_tokens=96, temperature=0)

    print(f"\nBitext customer support: {len(parts['train'])} train / {len(parts['val'])} val / "
          f"{len(parts['test'])} held-out conversations; data stage {data_seconds:.0f}s")
    print(f"pretrain small ({lm_metrics['params'] / 1e6:.2f} M params), {args.pretrain_minutes:g} min: "
          f"{lm_metrics['steps']} steps, {lm_metrics['tokens_per_s']:.0f} tok/s, val loss {lm_metrics['val_loss']:.3f}")
    print(f"SFT ({f'LoRA r={args.lora_r}' if args.lora_r else 'full'}), {args.sft_minutes:g} min: "
          f"{sft_metrics['steps']} steps, trainable params {sft_metrics.get('trainable_params', 0):,}")
    print(f"  validation loss on assistant tokens: before {sft_metrics['val_loss_before']:.3f} -> "
          f"after {sft_metrics['val_loss']:.3f}")
    for (question, reference), reply in zip(held_out, replies, strict=True):
        print(f"\nQ: {question}\nA (genforge): {reply.strip()}\nA (reference): {reference[:200]}...")


if __name__ == "__main__":
    main()
