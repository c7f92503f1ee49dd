"""Data-stage benchmark: `genforge data prepare` + `data pack` against Hugging Face `datasets` + datasketch.

Corpus: real text from ../shared/data (Shakespeare paragraphs, Chinese poetry and classics, review, tweet,
banking and customer-support sentences), every source once, then light perturbations of those documents
(one random character edit per ~150 characters) until the corpus reaches --size-mb. The perturbed copies
are the injected near-duplicates; "recall" is the fraction of them a side removed. One byte-level BPE
tokenizer (vocab 8192) is trained beforehand, untimed, and both sides encode with it.

Both sides read the same JSONL shards, apply the same per-document function (genforge's clean_text,
quality filters and scrub_pii), hash the same 5-character shingles of the same normalised text with 128
permutations at threshold 0.8, split train/val by the same hash, and write uint16 token files
(each document followed by EOS):
  baseline  the common alternative, written as a competent user would: datasets.load_dataset("json") ->
            .map(batched, num_proc=W): clean, filter, scrub, exact key and datasketch MinHash.bulk
            (update_batch per document) -> MinHashLSH query/insert in the main process -> per split
            .map(batched, num_proc=W) with the HF AutoTokenizer -> token file from the Arrow column
  genforge  genforge.data.prepare.prepare, then genforge.data.pack.pack, W workers each
Each side runs in its own subprocess, so its wall time, CPU time (user + sys of the process and all its
workers) and peak memory (PSS sampled every 0.2 s: of the main process, and of all its processes
together) are its own. Wall-clock MB/s depends on what
else runs on the machine; CPU time per document much less so: both are printed. With --repeat N each
figure is the best of N runs.

    .venv/bin/python benchmarks/bench_data.py              # >= 50 MB corpus
    .venv/bin/python benchmarks/bench_data.py --quick      # ~5 MB smoke run
    .venv/bin/python benchmarks/bench_data.py --dedup      # dedup alone: signatures/s and index docs/s
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHINGLE, NUM_PERM, THRESHOLD, VOCAB = 5, 128, 0.8, 8192


# ---------------------------------------------------------------------------------------------- corpus
def _poems(obj) -> list[str]:
    """Every poem/section of a chinese-poetry JSON file: lists of lines under "paragraphs" or "content"."""
    out = []
    if isinstance(obj, dict):
        for key in ("paragraphs", "content"):
            if isinstance(obj.get(key), list) and obj[key] and all(isinstance(x, str) for x in obj[key]):
                out.append("\n".join(obj[key]))
        for value in obj.values():
            if isinstance(value, list | dict):
                out.extend(_poems(value))
    elif isinstance(obj, list):
        for value in obj:
            out.extend(_poems(value))
    return out


def _column(path: Path, column: str, encoding: str = "utf-8") -> list[str]:
    with open(path, encoding=encoding, newline="") as f:
        return [row[column] for row in csv.DictReader(f)]


def base_documents(shared: Path) -> dict[str, list[str]]:
    """Real documents by source; text only, labels dropped."""
    d = shared
    shakespeare = (d / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").split("\n\n")
    poetry = [p for f in sorted(glob.glob(str(d / "chinese_poetry" / "**" / "*.json"), recursive=True))
              for p in _poems(json.loads(Path(f).read_text(encoding="utf-8")))]
    labelled = [line.split(" ", 1)[1] for name in ("stsa.binary.train", "stsa.binary.dev", "stsa.binary.test")
                for line in (d / "sst2_sentences" / name).read_text(encoding="utf-8").splitlines() if " " in line]
    labelled += [line.split(" ", 1)[1] for line in
                 (d / "mr_polarity" / "rt-polarity.all").read_text(encoding="cp1252").splitlines()]
    labelled += [line.rsplit("@", 1)[0] for line in
                 (d / "financial_phrasebank" / "Sentences_50Agree.txt").read_text(encoding="latin-1").splitlines()]
    clinc = json.loads((d / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    support = (_column(d / "bitext_customer_support" / "Bitext_Sample_Customer_Support_Training_Dataset.csv",
                       "response")
               + _column(d / "banking77" / "train.csv", "text")
               + [text for split in clinc.values() for text, _ in split])
    return {
        "shakespeare": shakespeare,
        "poetry": poetry,
        "reviews_en": labelled + _column(d / "twitter_financial_news_sentiment" / "sent_train.csv", "text"),
        "reviews_zh": (_column(d / "chnsenticorp_htl" / "ChnSentiCorp_htl_all.csv", "review")
                       + _column(d / "waimai_10k" / "waimai_10k.csv", "review")),
        "support": support,
    }


def perturb(text: str, rng: random.Random) -> str:
    """One random edit (substitute, insert or delete a letter) per ~150 characters, at least one."""
    chars = list(text)
    letters = [c for c in text if c.isalnum()] or ["x"]
    for _ in range(max(1, len(text) // 150)):
        spots = [i for i, c in enumerate(chars) if c.isalnum()] or [0]
        i = rng.choice(spots)
        op = rng.random()
        if op < 0.5 and chars:
            chars[i] = rng.choice([c for c in letters if c.casefold() != chars[i].casefold()] or ["x"])
        elif op < 0.75:
            chars.insert(i, rng.choice(letters))
        elif len(chars) > 1:
            del chars[i]
    return "".join(chars)


def build_corpus(shared: Path, folder: Path, size_mb: float, seed: int = 0) -> dict:
    """JSONL shards: the originals first (shuffled), then perturbed copies; returns what was injected."""
    rng = random.Random(seed)
    sources = base_documents(shared)
    originals = [t.strip() for docs in sources.values() for t in docs if t.strip()]
    rng.shuffle(originals)
    target = int(size_mb * 1e6)
    base_bytes = sum(len(t.encode("utf-8")) for t in originals)
    if base_bytes > 0.6 * target:  # small runs: a sample of originals, so copies are still ~40% of the corpus
        keep = int(len(originals) * 0.6 * target / base_bytes)
        originals = originals[:keep]
    candidates = [t for t in originals if len(t) >= 100]  # short texts: one edit moves Jaccard below 0.8
    copies, size = [], sum(len(t.encode("utf-8")) + 12 for t in originals)
    while size < target:
        copy = perturb(rng.choice(candidates), rng)
        copies.append(copy)
        size += len(copy.encode("utf-8")) + 12
    rng.shuffle(copies)
    folder.mkdir(parents=True, exist_ok=True)
    docs = originals + copies
    for shard, start in enumerate(range(0, len(docs), 20_000)):
        with open(folder / f"part-{shard:04d}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in docs[start : start + 20_000])
    (folder.parent / "injected.json").write_text(json.dumps(copies, ensure_ascii=False), encoding="utf-8")
    return {"docs": len(docs), "originals": len(originals), "injected": len(copies),
            "bytes": sum(p.stat().st_size for p in folder.iterdir())}


# ------------------------------------------------------------------------------------------------ sides
def side_genforge(corpus: Path, out: Path, tokenizer: Path, workers: int) -> dict:
    from genforge.data.config import PackConfig, PrepareConfig
    from genforge.data.pack import pack
    from genforge.data.prepare import prepare

    start = time.perf_counter()
    stats = prepare(PrepareConfig(inputs=[corpus], out=out, workers=workers, near_dup_threshold=THRESHOLD))
    mid = time.perf_counter()
    manifest = pack(PackConfig(data=out, tokenizer=tokenizer, workers=workers))
    end = time.perf_counter()
    return {"seconds": end - start, "cpu_s": _cpu_seconds(), "stages": {"prepare": mid - start, "pack": end - mid},
            "docs_in": stats["docs_in"], "docs_out": stats["docs_out"],
            "tokens": manifest["train_tokens"] + manifest["val_tokens"]}


def _clean_and_sign(batch: dict) -> dict:
    """The baseline's parallel map: clean, filter, scrub, then exact key + datasketch MinHash per document."""
    import hashlib

    from datasketch import MinHash

    from genforge.data.clean import clean_text, quality_reason
    from genforge.data.dedup import normalize_for_dedup
    from genforge.data.pii import scrub_pii
    from genforge.data.prepare import in_val

    texts, keys, shingles, keep, val = [], [], [], [], []
    for raw in batch["text"]:
        text = clean_text(raw)
        ok = quality_reason(text) is None
        if ok:
            text = scrub_pii(text)[0]
        norm = normalize_for_dedup(text)
        texts.append(text)
        keep.append(ok)
        val.append(in_val(text, 0, 0.05))
        keys.append(hashlib.blake2b(norm.encode("utf-8"), digest_size=16).digest())
        shingles.append([norm[i : i + SHINGLE].encode("utf-8") for i in range(max(1, len(norm) - SHINGLE + 1))]
                        if ok else [])  # rejected documents are not hashed
    sigs = [m.hashvalues for m in MinHash.bulk(shingles, num_perm=NUM_PERM, seed=1)]
    return {"text": texts, "keep": keep, "val": val, "key": keys, "minhash": sigs}


def side_baseline(corpus: Path, out: Path, tokenizer: Path, workers: int) -> dict:
    import numpy as np
    from datasets import DatasetDict, disable_progress_bars, load_dataset
    from datasketch import LeanMinHash, MinHashLSH
    from transformers import AutoTokenizer

    disable_progress_bars()
    start = time.perf_counter()
    files = sorted(str(p) for p in corpus.glob("*.jsonl"))
    ds = load_dataset("json", data_files=files, split="train", cache_dir=str(out / "hf_cache"))
    ds = ds.map(_clean_and_sign, batched=True, batch_size=1000, num_proc=workers)
    t_map = time.perf_counter()

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    exact: set[bytes] = set()
    splits: dict[str, list[int]] = {"train": [], "val": []}
    row = 0
    for batch in ds.select_columns(["keep", "val", "key", "minhash"]).iter(batch_size=1000):
        for keep, is_val, key, sig in zip(batch["keep"], batch["val"], batch["key"], batch["minhash"], strict=True):
            row += 1
            if not keep or key in exact:
                continue
            m = LeanMinHash(seed=1, hashvalues=sig, scheme="affine32")
            if lsh.query(m):
                continue
            exact.add(key)
            lsh.insert(row - 1, m, check_duplication=False)
            splits["val" if is_val else "train"].append(row - 1)
    t_lsh = time.perf_counter()

    tok = AutoTokenizer.from_pretrained(tokenizer)
    eos = tok.eos_token_id

    def tokenize(batch: dict) -> dict:
        ids = tok(batch["text"], add_special_tokens=False, return_attention_mask=False)["input_ids"]
        return {"ids": [x + [eos] for x in ids]}

    kept = DatasetDict({name: ds.select(rows) for name, rows in splits.items()})
    tokens = kept.map(tokenize, batched=True, batch_size=1000, num_proc=workers,
                      remove_columns=ds.column_names)
    n_tokens = 0
    for name, split in tokens.items():
        with open(out / f"{name}.bin", "wb") as f:
            for batch in split.with_format("arrow").iter(batch_size=10_000):
                ids = batch["ids"].combine_chunks().flatten().to_numpy().astype(np.uint16)
                ids.tofile(f)
                n_tokens += ids.size
    end, cpu = time.perf_counter(), _cpu_seconds()
    for name, rows in splits.items():  # untimed: the texts kept, for the recall check
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in ds.select(rows)["text"])
    return {"seconds": end - start, "cpu_s": cpu,
            "stages": {"map": t_map - start, "lsh": t_lsh - t_map, "tokenize": end - t_lsh},
            "docs_in": len(ds), "docs_out": sum(map(len, splits.values())), "tokens": n_tokens}


def _cpu_seconds() -> float:
    """User + sys CPU seconds of this process and of its finished worker processes."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _tree_pss_mb(pid: int) -> tuple[float, float]:
    """(PSS of `pid`, PSS of `pid` and all its descendants) in MB; PSS splits pages shared after a fork."""
    def pss(p: int) -> float:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("Pss:")) / 1024
        except (OSError, StopIteration):
            return 0.0

    def children(p: int) -> list[int]:
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                return [int(c) for c in f.read().split()]
        except OSError:
            return []

    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        total += pss(p)
        stack.extend(children(p))
    return pss(pid), total


def run_side(side: str, corpus: Path, out: Path, tokenizer: Path, workers: int) -> dict:
    """Run one side in a fresh interpreter, in a fresh output folder, sampling its memory every 0.2 s.

    Memory comes from /proc, not ru_maxrss, which a child inherits from the process that forked it (here
    the benchmark's parent, which holds the corpus).
    """
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = [sys.executable, __file__, "--side", side, "--corpus", str(corpus), "--out", str(out),
           "--tokenizer", str(tokenizer), "--workers", str(workers)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "TOKENIZERS_PARALLELISM": "false"}  # both sides: W processes of one thread each
    peak_main = peak_all = 0.0
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        while proc.poll() is None:
            main, everything = _tree_pss_mb(proc.pid)
            peak_main, peak_all = max(peak_main, main), max(peak_all, everything)
            time.sleep(0.2)  # reading smaps_rollup costs CPU: keep the sampling light
        stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"{side} failed:\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1]) | {"pss_main_mb": peak_main, "pss_all_mb": peak_all}


def recall(out: Path, injected: list[str]) -> float:
    """Fraction of the injected near-duplicates (that survive the quality filters) not in the output."""
    from genforge.data.clean import clean_text, quality_reason
    from genforge.data.pii import scrub_pii

    kept = {json.loads(line)["text"] for name in ("train.jsonl", "val.jsonl")
            for line in (out / name).read_text(encoding="utf-8").splitlines()}
    finals = [scrub_pii(t)[0] for t in map(clean_text, injected) if quality_reason(t) is None]
    return sum(t not in kept for t in finals) / max(1, len(finals))


def train_bench_tokenizer(shared: Path, work: Path) -> Path:
    """The tokenizer both sides use: genforge's byte-level BPE (vocab 8192) on the original documents."""
    from genforge.artifacts import write_manifest
    from genforge.data.config import TokenizerConfig
    from genforge.data.tokenizer import train_tokenizer

    data = work / "tokenizer_data"
    data.mkdir()
    docs = [t.strip() for texts in base_documents(shared).values() for t in texts if t.strip()]
    with open(data / "train.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in docs)
    write_manifest(data, "data.prepare", None)
    return train_tokenizer(TokenizerConfig(data=data, out=work / "tokenizer", vocab_size=VOCAB,
                                           max_docs=20_000))


def bench(args: argparse.Namespace, work: Path) -> None:
    corpus = work / "corpus"
    t0 = time.perf_counter()
    info = build_corpus(args.shared, corpus, args.size_mb)
    injected = json.loads((work / "injected.json").read_text(encoding="utf-8"))
    tokenizer = train_bench_tokenizer(args.shared, work)
    mb = info["bytes"] / 1e6
    print(f"corpus: {mb:.1f} MB, {info['docs']:,} documents ({info['originals']:,} originals + "
          f"{info['injected']:,} injected near-duplicates); tokenizer vocab {VOCAB}; "
          f"set-up {time.perf_counter() - t0:.1f} s")
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.1f} before the runs: other processes compete; wall-clock figures "
              "are noisy, CPU time per document much less")
    results = {}
    for side in ("baseline", "genforge"):
        runs = [run_side(side, corpus, work / side, tokenizer, args.workers) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["seconds"])  # the least disturbed run
        best["cpu_s"] = min(r["cpu_s"] for r in runs)
        best["pss_all_mb"] = max(r["pss_all_mb"] for r in runs)
        best["stages"] = {k: min(r["stages"][k] for r in runs) for k in best["stages"]}
        best["recall"] = recall(work / side, injected)
        results[side] = best

    names = {"baseline": "datasets + datasketch", "genforge": "genforge prepare+pack"}
    print(f"\n{'W=' + str(args.workers) + ', best of ' + str(args.repeat):<24}{'seconds':>8}{'MB/s':>7}"
          f"{'CPU s':>7}{'CPU us/doc':>11}{'docs out':>9}{'tokens':>11}{'recall':>7}{'peak PSS main/all MB':>22}")
    for side, r in results.items():
        print(f"{names[side]:<24}{r['seconds']:>8.1f}{mb / r['seconds']:>7.2f}{r['cpu_s']:>7.1f}"
              f"{1e6 * r['cpu_s'] / r['docs_in']:>11.0f}{r['docs_out']:>9,}{r['tokens']:>11,}{r['recall']:>7.3f}"
              f"{r['pss_main_mb']:>12.0f} / {r['pss_all_mb']:<7.0f}")
    for side, r in results.items():
        print(f"  {names[side]} stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items()))
    base, gf = results["baseline"], results["genforge"]
    gap = gf["recall"] - base["recall"]
    print(f"\nthroughput ratio genforge / baseline: wall-clock {base['seconds'] / gf['seconds']:.2f}x, "
          f"CPU time {base['cpu_s'] / gf['cpu_s']:.2f}x (goal >= 2x)")
    verdict = "equal" if abs(gap) <= 0.005 else "higher" if gap > 0 else "LOWER"
    print(f"dedup recall genforge {gf['recall']:.3f}, baseline {base['recall']:.3f}: {verdict} within 0.005 "
          f"({gap:+.3f}; the sides hash with different random permutations, so pairs near the threshold "
          "can fall either way)")


def bench_dedup(args: argparse.Namespace) -> None:
    """Micro-benchmark in one process: dedup signatures and LSH index alone, genforge against datasketch."""
    import hashlib

    import numpy as np
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    from genforge.data.dedup import (
        DedupIndex,
        chunk_band_keys,
        chunk_signatures,
        doc_signature,
        normalize_for_dedup,
    )

    rng = random.Random(0)
    docs = [t.strip() for texts in base_documents(args.shared).values() for t in texts if len(t.strip()) >= 100]
    rng.shuffle(docs)
    docs = docs[: int(args.dedup_docs * 0.8)]
    docs += [perturb(rng.choice(docs), rng) for _ in range(args.dedup_docs - len(docs))]
    rng.shuffle(docs)
    print(f"{len(docs):,} documents of >= 100 characters (a fifth are perturbed copies), "
          f"{sum(len(d.encode('utf-8')) for d in docs) / 1e6:.1f} MB; one process")

    def timed(fn, *fn_args):
        start = time.perf_counter()
        out = fn(*fn_args)
        return time.perf_counter() - start, out

    def datasketch_signatures():
        norms = [normalize_for_dedup(t) for t in docs]
        keys = [hashlib.blake2b(n.encode("utf-8"), digest_size=16).digest() for n in norms]
        shingles = [[n[i : i + SHINGLE].encode("utf-8") for i in range(max(1, len(n) - SHINGLE + 1))] for n in norms]
        return keys, [LeanMinHash(m) for m in MinHash.bulk(shingles, num_perm=NUM_PERM, seed=1)]

    def genforge_signatures():
        keys, sigs = [], []
        for lo in range(0, len(docs), 2048):  # prepare's worker sees ~1 MB chunks
            chunk_keys, chunk_sigs = chunk_signatures(docs[lo : lo + 2048], NUM_PERM, SHINGLE)
            keys += chunk_keys
            sigs.append(chunk_sigs)
        return keys, np.concatenate(sigs)

    t_ds, (ds_keys, ds_sigs) = timed(datasketch_signatures)
    t_doc, _ = timed(lambda: [doc_signature(d, NUM_PERM, SHINGLE) for d in docs])
    t_chunk, (keys, sigs) = timed(genforge_signatures)
    print(f"\n{'signatures (exact key + MinHash)':<34}{'docs/s':>10}{'ratio':>8}")
    for name, t in (("datasketch MinHash.bulk", t_ds), ("genforge doc_signature", t_doc),
                    ("genforge chunk_signatures", t_chunk)):
        print(f"{name:<34}{len(docs) / t:>10,.0f}{t_ds / t:>7.1f}x")

    def datasketch_index(lsh: MinHashLSH) -> list[bool]:
        exact, decisions = set(), []
        for i, (key, m) in enumerate(zip(ds_keys, ds_sigs, strict=True)):
            dup = key in exact or bool(lsh.query(m))
            if not dup:
                exact.add(key)
                lsh.insert(i, m, check_duplication=False)
            decisions.append(dup)
        return decisions

    def genforge_index(index: DedupIndex) -> list[bool]:
        with index:
            bands = chunk_band_keys(sigs, index.bands, index.rows).tolist()  # in bulk, as prepare's workers do
            return [index.add(*doc) is not None for doc in zip(keys, sigs, bands, strict=True)]

    # Constructors outside the timing: both choose bands and rows by numerical integration once.
    t_lsh, ds_dec = timed(datasketch_index, MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM))
    t_mem, gf_dec = timed(genforge_index, DedupIndex(THRESHOLD, NUM_PERM))
    with tempfile.TemporaryDirectory() as tmp:
        t_disk, disk_dec = timed(genforge_index, DedupIndex(THRESHOLD, NUM_PERM, path=Path(tmp) / "index.sqlite"))
    print(f"\n{'index (query + insert)':<34}{'docs/s':>10}{'ratio':>8}{'dropped':>9}")
    for name, t, dec in (("datasketch MinHashLSH", t_lsh, ds_dec), ("genforge DedupIndex", t_mem, gf_dec),
                         ("genforge DedupIndex (SQLite)", t_disk, disk_dec)):
        print(f"{name:<34}{len(docs) / t:>10,.0f}{t_lsh / t:>7.1f}x{sum(dec):>9,}")
    agree = sum(a == b for a, b in zip(ds_dec, gf_dec, strict=True)) / len(docs)
    print(f"\nkeep/drop decisions agree with datasketch on {agree:.1%} of documents; "
          f"SQLite decisions identical to in-memory: {disk_dec == gf_dec}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="~5 MB corpus, a smoke run")
    parser.add_argument("--size-mb", type=float, default=None, help="corpus size (default 50, or 5 with --quick)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data", help="real data folder")
    parser.add_argument("--workers", type=int, default=2, help="worker processes on both sides")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side; the best is reported")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--dedup", action="store_true",
                        help="instead: micro-benchmark of dedup signatures and index alone, one process")
    parser.add_argument("--dedup-docs", type=int, default=None, help="documents for --dedup (20,000; 3,000 quick)")
    parser.add_argument("--side", choices=("genforge", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.side:  # child process: run one side, print one JSON line
        run = side_genforge if args.side == "genforge" else side_baseline
        result = run(args.corpus, args.out, args.tokenizer, args.workers)
        print(json.dumps(result))
        return

    if args.dedup:
        args.dedup_docs = args.dedup_docs or (3000 if args.quick else 20_000)
        bench_dedup(args)
        return
    args.size_mb = args.size_mb or (5.0 if args.quick else 50.0)
    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        bench(args, work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
