"""Topics without labels: sentence embeddings, k-means, and c-TF-IDF keywords as each cluster's name.

The encoder's embeddings (mean of the last hidden states, L2-normalised: how sentence-transformers'
all-MiniLM-L6-v2 makes its sentence vectors) group texts by subject; k-means finds the groups, and
class-based TF-IDF (each cluster's term frequencies against how many clusters use the term, as in
BERTopic) names each by the words most particular to it. New items are routed to a topic by a linear
model (character n-gram TF-IDF + logistic regression) fitted to the clusters: it agrees with the
nearest centroid on most texts and costs microseconds instead of a second transformer forward pass per
item, which would halve the monitor's throughput.
Words are lower-cased Latin tokens (cashtags kept) or, for Chinese, character bigrams, so the
keywords need no segmenter.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

WORD = re.compile(r"\$?[a-z][a-z0-9&'\-]+|[\u4e00-\u9fff]+")
CJK = re.compile(r"[\u4e00-\u9fff]")


def words(text: str) -> list[str]:
    """Keyword candidates of a text: Latin words minus stop words and URLs, CJK runs as character bigrams."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    text = re.sub(r"https?://\S+", " ", text.lower())
    out = []
    for tok in WORD.findall(text):
        if CJK.match(tok):
            out += [tok[i:i + 2] for i in range(max(1, len(tok) - 1))]
        elif tok not in ENGLISH_STOP_WORDS and len(tok) > 2 and not tok.startswith("http"):
            out.append(tok)
    return out


def load_encoder(path: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModel

    from genforge.finetune.model import load_tokenizer
    from genforge.models.load import from_pretrained

    model = from_pretrained(AutoModel, path, dtype=torch.float32).eval()
    return model, load_tokenizer(path)


def embed(model: Any, tokenizer: Any, texts: list[str], *, seq_len: int = 64, batch_size: int = 64,
          progress: Any = None) -> np.ndarray:
    """L2-normalised mean-pooled sentence vectors [len(texts), hidden], batched by length (less padding)."""
    import torch

    ids = tokenizer(list(texts), truncation=True, max_length=seq_len)["input_ids"]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    pad = tokenizer.pad_token_id or 0
    with torch.inference_mode():
        for first in range(0, len(order), batch_size):
            rows = order[first:first + batch_size]
            width = max(len(ids[i]) for i in rows)
            input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                input_ids[r, :len(ids[i])] = torch.tensor(ids[i])
                mask[r, :len(ids[i])] = 1
            states = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            m = mask[..., None].float()
            vec = (states * m).sum(1) / m.sum(1).clamp(min=1)
            out[rows] = torch.nn.functional.normalize(vec, dim=-1).numpy()
            if progress:
                progress(len(rows))
    return out


def keywords(texts: list[str], clusters: np.ndarray, k: int, top: int = 4) -> list[list[str]]:
    """The `top` c-TF-IDF words of each cluster: tf(t, c) * log(1 + mean words per cluster / freq(t))."""
    counts = [Counter() for _ in range(k)]
    for text, c in zip(texts, clusters, strict=True):
        counts[int(c)].update(words(text))
    total = Counter()
    for c in counts:
        total.update(c)
    mean_words = sum(total.values()) / k
    names = []
    for c in counts:
        size = sum(c.values()) or 1
        score = {t: n / size * math.log(1 + mean_words / total[t]) for t, n in c.items()}
        names.append([t for t, _ in sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))[:top]])
    return names


def discover(vectors: np.ndarray, texts: list[str], k: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """(centroids [k, hidden] L2-normalised, unique topic names) of `k` clusters of the text vectors."""
    from sklearn.cluster import KMeans

    k = min(k, len(texts))
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(vectors)
    centroids = km.cluster_centers_ / np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True).clip(1e-9)
    names, used = [], set()
    for i, kw in enumerate(keywords(texts, km.labels_, k)):
        name = " ".join(kw[:3]) or f"topic {i}"
        if name in used:
            name = f"{name} ({i})"
        used.add(name)
        names.append(name)
    return centroids.astype(np.float32), names


def assign(vectors: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nearest centroid of each vector, its cosine similarity)."""
    sims = vectors @ centroids.T
    best = sims.argmax(1)
    return best, sims[np.arange(len(best)), best]


def fit_router(texts: list[str], clusters: np.ndarray, seed: int = 0) -> tuple[dict[str, Any], float]:
    """(the router's parameters, its agreement with the clusters on hash bucket 8, held out from its fit)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from genforge.finetune.data import hash_bucket

    held = np.array([hash_bucket(t) == 8 for t in texts])
    if held.all() or not held.any():
        held[:] = False
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2, max_features=60000)
    fit_texts = [t for t, h in zip(texts, held, strict=True) if not h]
    x = vec.fit_transform(fit_texts)
    clf = LogisticRegression(max_iter=1000, C=10, random_state=seed).fit(x, clusters[~held])
    agreement = float((clf.predict(vec.transform([t for t, h in zip(texts, held, strict=True) if h]))
                       == clusters[held]).mean()) if held.any() else 1.0
    classes = np.zeros((int(clusters.max()) + 1, x.shape[1]), dtype=np.float32)
    bias = np.full(int(clusters.max()) + 1, -1e9, dtype=np.float32)  # a cluster it never saw is never chosen
    coef = clf.coef_ if len(clf.classes_) > 2 else np.vstack([-clf.coef_, clf.coef_])
    intercept = clf.intercept_ if len(clf.classes_) > 2 else np.array([-clf.intercept_[0], clf.intercept_[0]])
    classes[clf.classes_], bias[clf.classes_] = coef, intercept
    return {"vocabulary": {k: int(v) for k, v in vec.vocabulary_.items()}, "idf": vec.idf_.astype(np.float32),
            "coef": classes, "intercept": bias}, agreement


def load_router(vocabulary: dict[str, int], idf: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> Any:
    """route(texts) -> (topic index, softmax probability) from saved router parameters."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, vocabulary=vocabulary)
    vec.idf_ = idf

    def route(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        scores = np.asarray(vec.transform(texts) @ coef.T) + intercept
        scores = np.exp(scores - scores.max(1, keepdims=True))
        probs = scores / scores.sum(1, keepdims=True)
        best = probs.argmax(1)
        return best, probs[np.arange(len(best)), best]

    return route
