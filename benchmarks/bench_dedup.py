"""Near-duplicate detection micro-benchmark: genforge's vectorised MinHash + LSH index vs datasketch.

Documents: real text from ../shared/data (the sources of bench_data.py), normalised the same way, 5-character
shingles, 128 permutations, threshold 0.8, one process. Measured separately:
  signatures  genforge doc_signature  vs  datasketch MinHash.update per shingle (the common usage) and
              MinHash.update_batch (datasketch's vectorised path)
  index       genforge DedupIndex.add (in memory, and SQLite on disk)  vs  MinHashLSH query + insert
Agreement = fraction of documents on which genforge's and datasketch's keep/drop decisions agree.

    .venv/bin/python benchmarks/bench_dedup.py            # 20,000 documents
    .venv/bin/python benchmarks/bench_dedup.py --quick    # 3,000 documents
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
K, NUM_PERM, THRESHOLD = 5, 128, 0.8


def documents(shared: Path, n: int, seed: int = 0) -> list[str]:
    """n real documents of >= 100 characters, a fifth of them repeated with one character edited."""
    from bench_data import base_documents, perturb

    rng = random.Random(seed)
    docs = [t.strip() for texts in base_documents(shared).values() for t in texts if len(t.strip()) >= 100]
    rng.shuffle(docs)
    docs = docs[: int(n * 0.8)]
    docs += [perturb(rng.choice(docs), rng) for _ in range(n - len(docs))]
    rng.shuffle(docs)
    return docs


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3,000 documents")
    parser.add_argument("--docs", type=int, default=None, help="number of documents (default 20,000)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data", help="real data folder")
    args = parser.parse_args()
    n = args.docs or (3000 if args.quick else 20000)

    from datasketch import MinHash, MinHashLSH

    from genforge.data.dedup import DedupIndex, doc_signature, normalize_for_dedup

    docs = documents(args.shared, n)
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    print(f"{len(docs):,} documents, {mb:.1f} MB")
    perms = MinHash(num_perm=NUM_PERM, seed=1).permutations

    def shingles(text: str) -> list[bytes]:
        norm = normalize_for_dedup(text)
        return [norm[i : i + K].encode("utf-8") for i in range(max(1, len(norm) - K + 1))]

    def ds_update(texts):
        out = []
        for t in texts:
            m = MinHash(num_perm=NUM_PERM, seed=1, permutations=perms, scheme="affine32")
            for s in shingles(t):
                m.update(s)
            out.append(m)
        return out

    def ds_batch(texts):
        out = []
        for t in texts:
            m = MinHash(num_perm=NUM_PERM, seed=1, permutations=perms, scheme="affine32")
            m.update_batch(shingles(t))
            out.append(m)
        return out

    sub = docs[: max(200, len(docs) // 10)]  # the per-shingle loop is slow: time it on a tenth
    t_upd, _ = timed(ds_update, sub)
    t_bat, ds_sigs = timed(ds_batch, docs)
    t_gf, gf_sigs = timed(lambda: [doc_signature(d, NUM_PERM, K) for d in docs])
    rows = [("datasketch MinHash.update", len(sub) / t_upd), ("datasketch update_batch", len(docs) / t_bat),
            ("genforge doc_signature", len(docs) / t_gf)]
    print(f"\n{'signatures':<30}{'docs/s':>10}{'ratio':>8}")
    for name, rate in rows:
        print(f"{name:<30}{rate:>10,.0f}{rate / rows[0][1]:>7.1f}x")

    def ds_index():
        lsh, decisions = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM), []
        for i, m in enumerate(ds_sigs):
            dup = bool(lsh.query(m))
            if not dup:
                lsh.insert(str(i), m, check_duplication=False)
            decisions.append(dup)
        return decisions

    def gf_index(path=None):
        with DedupIndex(THRESHOLD, NUM_PERM, path=path) as index:
            return [index.add(key, sig) is not None for key, sig in gf_sigs]

    t_ds, ds_dec = timed(ds_index)
    t_mem, gf_dec = timed(gf_index)
    with tempfile.TemporaryDirectory() as tmp:
        t_disk, disk_dec = timed(gf_index, Path(tmp) / "index.sqlite")
    print(f"\n{'index (query + insert)':<30}{'docs/s':>10}{'ratio':>8}{'dropped':>9}")
    for name, t, dec in (("datasketch MinHashLSH", t_ds, ds_dec), ("genforge DedupIndex", t_mem, gf_dec),
                         ("genforge DedupIndex (SQLite)", t_disk, disk_dec)):
        print(f"{name:<30}{len(docs) / t:>10,.0f}{t_ds / t:>7.1f}x{sum(dec):>9,}")
    agree = sum(a == b for a, b in zip(ds_dec, gf_dec, strict=True)) / len(docs)
    total = (t_bat + t_ds) / (t_gf + t_mem)
    print(f"\nend to end vs update_batch + MinHashLSH: {total:.1f}x; decisions agree on {agree:.1%} of documents; "
          f"SQLite decisions identical to in-memory: {disk_dec == gf_dec}")


if __name__ == "__main__":
    main()
