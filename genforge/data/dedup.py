"""Exact and near-duplicate detection: vectorised MinHash signatures + a compact LSH index.

Why not datasketch: its `MinHash.update_batch` still hashes each shingle with a Python call (SHA-1),
and each document costs a dozen numpy calls, which for short documents cost more than the arithmetic.
Here the character shingles of a whole chunk of documents (`chunk_signatures`, ~1 MB in a prepare
worker) are hashed in one numpy pass (a polynomial hash over code points, then a 64-bit mixer), and all
`num_perm` hash functions are one (num_perm x shingles) matrix op per block, with the per-document minima
taken by `np.minimum.reduceat`; the result is bit-identical to `doc_signature` per document. The band
keys of the chunk (`chunk_band_keys`) are computed there too, so the main process only looks them up.
`benchmarks/bench_data.py --dedup --quick` (3,000 real documents, one core, other jobs on the machine):
`chunk_signatures` ~15k docs/s, 5x datasketch's `MinHash.bulk`; `DedupIndex.add` with bulk band keys
~140k docs/s, 5x `MinHashLSH` query + insert (16k on SQLite).

Shingles are over *characters* of the normalised text, so the same code works for Chinese (no spaces)
and English. Documents are compared only with documents already kept: `DedupIndex.add` answers
"exact_dup", "near_dup" or None (kept, and indexed). The LSH bands/rows are datasketch's optimum for the
threshold with false negatives weighted 9x (`_lsh_error`); a band collision counts only if the signatures'
estimated Jaccard reaches the threshold.

Memory of the in-memory index per kept document (tracemalloc, 128 permutations, threshold 0.8; the
test keeps it under 2 KB): 512 B of signature in a growable uint32 matrix (up to 2x while it doubles)
+ 14 band-table entries (int key -> int doc, ~60 B each) + the 16-byte exact key in a set (~100 B):
~1.6 KB, i.e. ~1.6 GB per million kept documents. For larger corpora pass `path=`: the same tables
live in SQLite on disk and RAM stays at SQLite's page cache.
"""

from __future__ import annotations

import functools
import hashlib
import re
import sqlite3
import unicodedata
from pathlib import Path

import numpy as np

from genforge.errors import ConfigError

_POLY = np.uint64(0x100000001B3)  # odd 64-bit multiplier of the shingle polynomial hash (FNV prime)
# Shingles per matrix op: bounds the temporary to _BLOCK * num_perm * 8 bytes. The matrix is laid out
# (num_perm, shingles) so every numpy loop runs along a long contiguous row (~3x faster than transposed).
_BLOCK = 2048


@functools.cache
def _non_word() -> re.Pattern[str]:
    """Runs of what `normalize_for_dedup` drops: punctuation, whitespace, symbols, emoji, `_`.

    Not `[\\W_]`: Python's `\\W` also matches combining marks, which spell the words of many scripts
    (Devanagari, Bengali, Tamil and Thai vowel signs, Arabic harakat), and dropping them made "वह जा रहा है" and
    "वह जा रही है" (he / she is going) one exact key. Marks are listed for the Basic Multilingual Plane
    only, where every script in wide use has its marks: one non-BMP code point in a character class makes
    `re` test the class entry by entry (~7x slower on any text). Variation selectors (emoji presentation)
    still go with the emoji they follow. Built on first use (~30 ms), so importing this module stays instant.
    """
    marks = "".join(chr(c) for c in range(0x10000)
                    if unicodedata.category(chr(c)) in ("Mn", "Mc") and not 0xFE00 <= c <= 0xFE0F)
    return re.compile(f"(?:[^\\w{marks}]|_)+")


def normalize_for_dedup(text: str) -> str:
    """Canonical form for duplicate keys: NFKC (full-width -> ASCII), casefold, no punctuation/space.

    Two documents that differ only in case, punctuation or whitespace get the same exact key; letters,
    digits and combining marks are kept.
    """
    return _non_word().sub("", unicodedata.normalize("NFKC", text).casefold())


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads polynomial-hash bits so multiply-shift permutations behave randomly."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def code_points(text: str) -> np.ndarray:
    """The Unicode code points of `text` as uint64 (the input of `window_hashes`)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def window_hashes(cps: np.ndarray, k: int) -> np.ndarray:
    """64-bit hashes of every k-code-point window of `cps` (cps.size - k + 1 of them; k <= cps.size).

    The window length is hashed in, so a short text differs from the prefix of a longer one; the mixer
    makes every output bit depend on every character (the top bits of the bare polynomial barely see the
    last characters).
    """
    n = cps.size - k + 1
    h = np.full(n, np.uint64(k), dtype=np.uint64)
    for j in range(k):
        h = h * _POLY + cps[j : j + n]
    return _mix64(h)


def shingle_hashes(normalized: str, shingle_size: int = 5) -> np.ndarray:
    """64-bit hashes of every `shingle_size`-character window (the whole text if it is shorter)."""
    cps = code_points(normalized)
    if cps.size == 0:
        return cps
    return window_hashes(cps, min(shingle_size, cps.size))


@functools.lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multiply-add-shift hash family h_i(x) = ((a_i * x + b_i) mod 2^64) >> 32 with odd a_i."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def _minhash64(hashes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """min over shingles of ((a_i * x + b_i) mod 2^64) for each permutation i (all-ones for no shingles)."""
    sig = np.full(a.size, np.uint64(2**64 - 1), dtype=np.uint64)
    for start in range(0, hashes.size, _BLOCK):
        t = np.multiply(a[:, None], hashes[None, start : start + _BLOCK])
        t += b[:, None]
        np.minimum(sig, t.min(axis=1), out=sig)
    return sig


def minhash(hashes: np.ndarray, num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """MinHash signature (uint32[num_perm]) of a set of 64-bit shingle hashes; all-ones for an empty set."""
    # The shift is monotone, so it can follow the min: one pass less over the (shingles x num_perm) matrix.
    return (_minhash64(hashes, *_permutations(num_perm, seed)) >> np.uint64(32)).astype(np.uint32)


def doc_signature(text: str, num_perm: int = 128, shingle_size: int = 5, seed: int = 1) -> tuple[bytes, np.ndarray]:
    """(16-byte exact key, MinHash signature) of a document. Pure: safe to run in worker processes."""
    norm = normalize_for_dedup(text)
    key = hashlib.blake2b(norm.encode("utf-8"), digest_size=16).digest()
    return key, minhash(shingle_hashes(norm, shingle_size), num_perm, seed)


def chunk_signatures(texts: list[str], num_perm: int = 128, shingle_size: int = 5,
                     seed: int = 1) -> tuple[list[bytes], np.ndarray]:
    """`doc_signature` of many documents at once: (exact keys, uint32 signatures of shape (len(texts), num_perm)).

    Bit-identical to calling `doc_signature` per text, but the numpy work is a few calls per ~1 MB chunk
    instead of ~15 per document, which is what a corpus of short documents (sentences, reviews) pays most
    for. The code points of all documents are laid end to end and hashed in one pass; windows that cross a
    document boundary are dropped; each block of `_BLOCK` shingles goes through the permutations as one
    matrix op, and `np.minimum.reduceat` takes the per-document minima within the block. Texts shorter
    than a shingle, whose single shingle is hashed differently, take the per-document path.
    """
    a, b = _permutations(num_perm, seed)
    norms = [normalize_for_dedup(t) for t in texts]
    keys = [hashlib.blake2b(n.encode("utf-8"), digest_size=16).digest() for n in norms]
    mins = np.full((len(texts), num_perm), np.uint64(2**64 - 1), dtype=np.uint64)
    lengths = np.fromiter(map(len, norms), dtype=np.int64, count=len(norms))
    full = np.flatnonzero(lengths >= shingle_size)
    for i in np.flatnonzero((lengths > 0) & (lengths < shingle_size)):
        mins[i] = _minhash64(shingle_hashes(norms[i], shingle_size), a, b)
    if full.size:
        joined = "".join(norms) if full.size == len(norms) else "".join(norms[i] for i in full)
        hashes = window_hashes(code_points(joined), shingle_size)
        # Drop the windows that start in the last shingle_size-1 characters of each document but the last.
        ends = np.cumsum(lengths[full])
        keep = np.ones(hashes.size, dtype=bool)
        keep[(ends[:-1, None] - np.arange(shingle_size - 1, 0, -1)[None, :]).ravel()] = False
        hashes = hashes[keep]
        counts = lengths[full] - shingle_size + 1
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        for lo in range(0, hashes.size, _BLOCK):
            hi = min(lo + _BLOCK, hashes.size)
            # Documents with shingles in [lo, hi): the one straddling lo, then those starting inside.
            first, last = np.searchsorted(starts, lo, "right") - 1, np.searchsorted(starts, hi, "left")
            cuts = starts[first:last] - lo
            cuts[0] = 0
            t = np.multiply(a[:, None], hashes[None, lo:hi])
            t += b[:, None]
            rows = full[first:last]
            mins[rows] = np.minimum(mins[rows], np.minimum.reduceat(t, cuts, axis=1).T)
    # The shift is monotone, so it can follow the min: one pass less over the (shingles x num_perm) matrix.
    return keys, (mins >> np.uint64(32)).astype(np.uint32)


def chunk_band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """`band_keys` of many signatures at once: an int64 array (len(signatures), bands)."""
    mult, offset = _band_multipliers(bands, rows)
    sig = signatures[:, : bands * rows].reshape(len(signatures), bands, rows)
    return ((sig * mult).sum(axis=2, dtype=np.uint64) + offset).view(np.int64)


def jaccard_estimate(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Fraction of equal MinHash values: an unbiased estimate of the shingle-set Jaccard similarity."""
    return float(np.mean(sig_a == sig_b))


def _lsh_error(threshold: float, bands: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Weighted false-positive + false-negative area of the LSH S-curve 1-(1-s^r)^b, for arrays of (b, r).

    False negatives weigh 9x more than false positives: a pair LSH never compares is a duplicate kept, while
    a false candidate costs one signature comparison (`DedupIndex.add` confirms every candidate by its
    estimated Jaccard). With datasketch's equal weights, 128 permutations at 0.8 give 9 bands x 13 rows,
    which compare a pair at Jaccard 0.8 with probability 0.40 (0.69 at 0.85); 14 x 9 compare it with 0.87
    (0.97 at 0.85), for ~5 more index entries a document."""
    s = np.linspace(0.0, 1.0, 2001)[:, None]
    p = 1.0 - (1.0 - s ** rows[None, :]) ** bands[None, :]
    fp = np.trapezoid(np.where(s <= threshold, p, 0.0), s[:, 0], axis=0)
    fn = np.trapezoid(np.where(s >= threshold, 1.0 - p, 0.0), s[:, 0], axis=0)
    return 0.1 * fp + 0.9 * fn


@functools.lru_cache(maxsize=32)
def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimising the weighted FP+FN error (`_lsh_error`), as
    datasketch's MinHashLSH does with its weights."""
    pairs = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], dtype=float)
    err = _lsh_error(threshold, pairs[:, 0], pairs[:, 1])
    b, r = pairs[int(np.argmin(err))]
    return int(b), int(r)


@functools.lru_cache(maxsize=8)
def _band_multipliers(bands: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed random odd multipliers and per-band offsets (stable across runs: on-disk keys must not change)."""
    rng = np.random.default_rng(0x5EED)
    mult = rng.integers(0, 2**63, size=(bands, rows), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    return mult, rng.integers(0, 2**63, size=bands, dtype=np.uint64)


def band_keys(signature: np.ndarray, bands: int, rows: int) -> list[int]:
    """One signed 64-bit key per band: a random linear hash of the band's values (mod 2^64) + a band offset.

    Distinct multipliers per band keep equal values in different bands apart, so one table holds all
    bands. Five numpy calls per document (a per-row polynomial loop costs ~4x more); a rare collision
    only adds a candidate, which the Jaccard check then rejects.
    """
    mult, offset = _band_multipliers(bands, rows)
    sig = signature[: bands * rows].reshape(bands, rows)
    return ((sig * mult).sum(axis=1, dtype=np.uint64) + offset).view(np.int64).tolist()


class _MemoryStore:
    """Index tables in Python dicts + one growable uint32 signature matrix (rows = kept documents)."""

    def __init__(self, num_perm: int):
        self.exact: set[bytes] = set()
        self.buckets: dict[int, int | list[int]] = {}
        self.sigs = np.empty((1024, num_perm), dtype=np.uint32)
        self.count = 0

    def has_exact(self, key: bytes) -> bool:
        return key in self.exact

    def candidates(self, keys: list[int]) -> list[int]:
        if self.buckets.keys().isdisjoint(keys):  # the common case, answered in C
            return []
        out: list[int] = []
        for k in keys:
            hit = self.buckets.get(k)
            if hit is not None:
                out.extend(hit if isinstance(hit, list) else (hit,))
        return out

    def signatures(self, ids: list[int]) -> np.ndarray:
        return self.sigs[ids]

    def insert(self, key: bytes, keys: list[int], signature: np.ndarray) -> None:
        doc = self.count
        if doc == len(self.sigs):
            self.sigs = np.concatenate([self.sigs, np.empty_like(self.sigs)])
        self.sigs[doc] = signature
        self.count += 1
        self.exact.add(key)
        for k in keys:
            hit = self.buckets.setdefault(k, doc)
            if hit != doc:  # a second kept doc in this bucket (similar band, failed verification)
                if isinstance(hit, list):
                    hit.append(doc)
                else:
                    self.buckets[k] = [hit, doc]

    def commit(self) -> None:
        pass


class _SqliteStore:
    """The same tables in one SQLite file, for corpora whose index does not fit in RAM.

    Writes are batched in transactions of `commit_every` documents; reads see uncommitted rows of the
    same connection, so decisions are identical to the in-memory store.
    """

    def __init__(self, path: Path, num_perm: int, bands: int, rows: int, commit_every: int = 5000):
        self.db = sqlite3.connect(str(path))
        self.db.executescript(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; PRAGMA cache_size=-65536;"  # 64 MB page cache
            "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;"
            "CREATE TABLE IF NOT EXISTS exact (key BLOB PRIMARY KEY) WITHOUT ROWID;"
            "CREATE TABLE IF NOT EXISTS band (key INTEGER, doc INTEGER, PRIMARY KEY (key, doc)) WITHOUT ROWID;"
            "CREATE TABLE IF NOT EXISTS sig (doc INTEGER PRIMARY KEY, value BLOB);"
        )
        want = {"num_perm": str(num_perm), "bands": str(bands), "rows": str(rows)}
        have = dict(self.db.execute("SELECT name, value FROM meta"))
        if have and have != want:
            raise ConfigError(f"dedup index {path} was built with {have}; this run uses {want}: "
                              "use the same threshold/num_perm or another index path")
        self.db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", want.items())
        self.num_perm = num_perm
        self.count = self.db.execute("SELECT COUNT(*) FROM sig").fetchone()[0]
        self.commit_every = commit_every

    def has_exact(self, key: bytes) -> bool:
        return self.db.execute("SELECT 1 FROM exact WHERE key = ?", (key,)).fetchone() is not None

    def candidates(self, keys: list[int]) -> list[int]:
        marks = ",".join("?" * len(keys))
        return [d for (d,) in self.db.execute(f"SELECT doc FROM band WHERE key IN ({marks})", keys)]

    def signatures(self, ids: list[int]) -> np.ndarray:
        unique = sorted(set(ids))
        marks = ",".join("?" * len(unique))
        found = dict(self.db.execute(f"SELECT doc, value FROM sig WHERE doc IN ({marks})", unique))
        return np.stack([np.frombuffer(found[i], dtype=np.uint32) for i in ids])

    def insert(self, key: bytes, keys: list[int], signature: np.ndarray) -> None:
        doc = self.count
        self.db.execute("INSERT INTO sig VALUES (?, ?)", (doc, signature.astype(np.uint32).tobytes()))
        self.db.execute("INSERT OR IGNORE INTO exact VALUES (?)", (key,))
        self.db.executemany("INSERT OR IGNORE INTO band VALUES (?, ?)", [(k, doc) for k in keys])
        self.count += 1
        if self.count % self.commit_every == 0:
            self.db.commit()

    def commit(self) -> None:
        self.db.commit()


class DedupIndex:
    """Kept documents, queried by exact key and by LSH band keys of their MinHash signatures.

    `add` returns "exact_dup" / "near_dup" when a kept document matches, else None and indexes the new
    document. A band collision is confirmed only if the estimated Jaccard similarity of the two signatures
    reaches `threshold`, which removes most LSH false positives. With `path`, the index lives in SQLite
    (bounded RAM; reopening the same file continues deduplicating against what it already holds).
    """

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, path: Path | str | None = None,
                 bands: int | None = None, rows: int | None = None):
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"dedup threshold must be in (0, 1]; got {threshold}")
        if num_perm < 2:
            raise ConfigError(f"dedup num_perm must be >= 2; got {num_perm}")
        if (bands is None) != (rows is None):
            raise ConfigError("dedup bands and rows must be given together")
        if bands is None:
            bands, rows = optimal_bands(round(threshold, 6), num_perm)
        if bands * rows > num_perm:
            raise ConfigError(f"dedup bands*rows = {bands * rows} exceeds num_perm = {num_perm}")
        self.threshold, self.num_perm, self.bands, self.rows = threshold, num_perm, bands, rows
        self.path = Path(path) if path is not None else None
        self._store = (_MemoryStore(num_perm) if self.path is None
                       else _SqliteStore(self.path, num_perm, bands, rows))

    def __len__(self) -> int:
        """Number of kept (indexed) documents."""
        return self._store.count

    def add(self, exact_key: bytes, signature: np.ndarray, keys: list[int] | None = None) -> str | None:
        """Check one document against the kept ones and keep it if it is new.

        `keys` are its band keys when already computed in bulk (`chunk_band_keys` in a worker process).
        """
        if signature.shape != (self.num_perm,):
            raise ConfigError(f"signature has shape {signature.shape}; index expects ({self.num_perm},)")
        if self._store.has_exact(exact_key):
            return "exact_dup"
        if keys is None:
            keys = band_keys(signature, self.bands, self.rows)
        cands = self._store.candidates(keys)
        if cands:
            sims = np.mean(self._store.signatures(cands) == signature[None, :], axis=1)
            if sims.max() >= self.threshold:
                return "near_dup"
        self._store.insert(exact_key, keys, signature)
        return None

    def close(self) -> None:
        """Commit pending writes (on-disk index) and release the file; the in-memory index just stays."""
        self._store.commit()
        if isinstance(self._store, _SqliteStore):
            self._store.db.close()

    def __enter__(self) -> DedupIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
