"""Packing benchmark: `genforge data pack` against HF `datasets.map` + the HF tokenizer (the nanoGPT recipe).

Corpus: the real documents of ../shared/data (the same sources as bench_data.py: Shakespeare, Chinese
poetry, English/Chinese reviews, support messages), shuffled and repeated to --size-mb, written as a
prepared-data folder. One byte-level BPE tokenizer (genforge, vocab 8192) is trained on it and used by both
sides, and both write the same flat uint16 token file (each document followed by EOS), which is checked.
  baseline  datasets.load_dataset("json") -> .map(tokenize batched, num_proc=W) with AutoTokenizer ->
            total length -> np.memmap filled shard by shard (nanoGPT's data/openwebtext/prepare.py)
  genforge  genforge.data.pack.pack with W workers (train.bin and the small val.bin)
Each side runs in its own subprocess. Throughput = UTF-8 bytes of text encoded per second.

    .venv/bin/python benchmarks/bench_pack.py            # ~50 MB corpus
    .venv/bin/python benchmarks/bench_pack.py --quick    # ~5 MB smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
VOCAB = 8192


def build_prepared(shared: Path, folder: Path, size_mb: float, seed: int = 0) -> int:
    """A prepared-data folder of ~size_mb of real text (train.jsonl + a small val.jsonl); returns text bytes."""
    from bench_data import base_documents

    from genforge.artifacts import write_manifest

    rng = random.Random(seed)
    docs = [t.strip() for texts in base_documents(shared).values() for t in texts if t.strip()]
    rng.shuffle(docs)
    folder.mkdir(parents=True, exist_ok=True)
    target, text_bytes, i = int(size_mb * 1e6), 0, 0
    with open(folder / "train.jsonl", "w", encoding="utf-8") as f:
        while text_bytes < target:
            text = docs[i % len(docs)]
            f.write(json.dumps({"text": text, "source": "bench"}, ensure_ascii=False) + "\n")
            text_bytes += len(text.encode("utf-8"))
            i += 1
    with open(folder / "val.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t, "source": "bench"}, ensure_ascii=False) + "\n" for t in docs[:200])
    write_manifest(folder, "data.prepare", None, metrics={"train_docs": i})
    return text_bytes


def side_genforge(data: Path, tokenizer: Path, workers: int) -> dict:
    from genforge.data.config import PackConfig
    from genforge.data.pack import pack

    start = time.perf_counter()
    manifest = pack(PackConfig(data=data, tokenizer=tokenizer, workers=workers))
    return {"seconds": time.perf_counter() - start, "tokens": manifest["train_tokens"],
            "bin": str(data / "train.bin")}


def side_baseline(data: Path, tokenizer: Path, workers: int) -> dict:
    import numpy as np
    from datasets import disable_progress_bars, load_dataset
    from transformers import AutoTokenizer

    disable_progress_bars()
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(tokenizer)
    eos = tok.eos_token_id

    def process(batch: dict) -> dict:
        ids = tok(batch["text"], add_special_tokens=False)["input_ids"]
        ids = [x + [eos] for x in ids]
        return {"ids": ids, "len": [len(x) for x in ids]}

    ds = load_dataset("json", data_files=str(data / "train.jsonl"), split="train",
                      cache_dir=str(data / "hf_cache"))
    ds = ds.map(process, batched=True, batch_size=1000, num_proc=workers, remove_columns=ds.column_names)
    total = int(np.sum(ds["len"], dtype=np.uint64))
    out = data / "baseline_train.bin"
    arr = np.memmap(out, dtype=np.uint16, mode="w+", shape=(total,))
    idx, shards = 0, max(1, min(1024, len(ds) // 1000))
    for i in range(shards):
        batch = ds.shard(num_shards=shards, index=i, contiguous=True).with_format("numpy")
        chunk = np.concatenate(batch["ids"]) if len(batch) else np.empty(0, dtype=np.uint16)
        arr[idx : idx + len(chunk)] = chunk
        idx += len(chunk)
    arr.flush()
    return {"seconds": time.perf_counter() - start, "tokens": total, "bin": str(out)}


def run_side(side: str, data: Path, tokenizer: Path, workers: int) -> dict:
    cmd = [sys.executable, __file__, "--side", side, "--data", str(data), "--tokenizer", str(tokenizer),
           "--workers", str(workers)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="~5 MB corpus, a smoke run")
    parser.add_argument("--size-mb", type=float, default=None, help="corpus size (default 50, or 5 with --quick)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data", help="real data folder")
    parser.add_argument("--workers", type=int, default=2, help="worker processes on both sides")
    parser.add_argument("--side", choices=("genforge", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.side:  # child process: run one side, print one JSON line
        run = side_genforge if args.side == "genforge" else side_baseline
        print(json.dumps(run(args.data, args.tokenizer, args.workers)))
        return

    import numpy as np

    from genforge.data.config import TokenizerConfig
    from genforge.data.tokenizer import train_tokenizer

    args.size_mb = args.size_mb or (5.0 if args.quick else 50.0)
    work = Path(tempfile.mkdtemp(prefix="bench_pack_"))
    try:
        t0 = time.perf_counter()
        text_bytes = build_prepared(args.shared, work / "data", args.size_mb)
        tokenizer = train_tokenizer(TokenizerConfig(data=work / "data", out=work / "tok", vocab_size=VOCAB,
                                                    max_docs=200_000))
        print(f"corpus: {text_bytes / 1e6:.1f} MB of text; tokenizer vocab {VOCAB} trained; "
              f"setup {time.perf_counter() - t0:.1f} s")
        results = {side: run_side(side, work / "data", tokenizer, args.workers) for side in ("baseline", "genforge")}
        mb = text_bytes / 1e6
        print(f"\n{'pack (W=' + str(args.workers) + ')':<30}{'seconds':>9}{'MB/s':>8}{'tokens':>14}")
        names = {"baseline": "datasets.map + HF tokenizer", "genforge": "genforge data pack"}
        for side, r in results.items():
            print(f"{names[side]:<30}{r['seconds']:>9.2f}{mb / r['seconds']:>8.2f}{r['tokens']:>14,}")
        same = np.array_equal(np.fromfile(results["baseline"]["bin"], dtype=np.uint16),
                              np.fromfile(results["genforge"]["bin"], dtype=np.uint16))
        speedup = results["baseline"]["seconds"] / results["genforge"]["seconds"]
        print(f"\nspeed-up {speedup:.2f}x; identical token files: {same}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
