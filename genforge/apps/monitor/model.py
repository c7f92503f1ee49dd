"""The monitor's model at run time: sentiment and topic of a batch of texts.

Loads what `genforge app monitor train` wrote: the sentiment classifier (and the Chinese one, when trained)
through `genforge.finetune.classifier.load_classifier` (any saved variant, compressed ones included), and
either the topic classifier or the discovered topics' router (see topics.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genforge.artifacts import read_json, read_manifest, reading
from genforge.errors import ArtifactError

RETRAIN = "train the model folder again with `genforge app monitor train`"


@dataclass
class MonitorModel:
    folder: Path
    sentiment: tuple[Any, Any, dict[str, Any]]  # (classifier, tokenizer, classifier.json)
    topic: tuple[Any, Any, dict[str, Any]] | None = None  # a topic classifier, or
    router: Any = None  # the discovered topics' router: texts -> (topic index, probability), or
    encoder: tuple[Any, Any] | None = None  # (encoder, tokenizer) with
    centroids: Any = None  # [topics, hidden]: nearest centroid
    topic_seq_len: int = 64
    topic_names: list[str] = field(default_factory=list)
    sentiment_zh: tuple[Any, Any, dict[str, Any]] | None = None  # for the Chinese texts (train --zh-model)
    lock: threading.Lock = field(default_factory=threading.Lock)  # one forward pass at a time

    def _sentiment(self, texts: list[str], batch_size: int) -> list[tuple[list[str], Any]]:
        """(labels, probabilities) of each text; the Chinese ones from the Chinese classifier if there is one."""
        from genforge.apps.monitor.train import is_chinese
        from genforge.finetune.classifier import predict_probs

        groups = [(self.sentiment, list(range(len(texts))))]
        if self.sentiment_zh is not None:
            chinese = [is_chinese(t) for t in texts]
            groups = [(self.sentiment, [i for i, zh in enumerate(chinese) if not zh]),
                      (self.sentiment_zh, [i for i, zh in enumerate(chinese) if zh])]
        out: list[Any] = [None] * len(texts)
        for (model, tok, info), index in groups:
            if index:
                probs = predict_probs(model, tok, [texts[i] for i in index], seq_len=info["seq_len"],
                                      multi_label=False, batch_size=batch_size)
                for i, row in zip(index, probs, strict=True):
                    out[i] = (info["labels"], row)
        return out

    def classify(self, texts: list[str], batch_size: int = 64) -> list[dict[str, Any]]:
        """One {sentiment, confidence, probs, topic, topic_score} per text, in order."""
        from genforge.apps.monitor import topics
        from genforge.finetune.classifier import predict_probs

        if not texts:
            return []
        with self.lock:
            sentiments = self._sentiment(texts, batch_size)
            if self.topic is not None:
                tmodel, ttok, tinfo = self.topic
                tprobs = predict_probs(tmodel, ttok, texts, seq_len=tinfo["seq_len"], multi_label=False,
                                       batch_size=batch_size)
                best, score = tprobs.argmax(1), tprobs.max(1)
                names = tinfo["labels"]
            elif self.router is not None:
                best, score = self.router(texts)
                names = self.topic_names
            else:
                vectors = topics.embed(*self.encoder, texts, seq_len=self.topic_seq_len, batch_size=batch_size)
                best, score = topics.assign(vectors, self.centroids)
                names = self.topic_names
        out = []
        for (labels, row), b, s in zip(sentiments, best, score, strict=True):
            i = int(row.argmax())
            out.append({"sentiment": labels[i], "confidence": float(row[i]),
                        "probs": {lab: round(float(p), 4) for lab, p in zip(labels, row, strict=True)},
                        "topic": names[int(b)], "topic_score": float(s)})
        return out


def load_monitor_model(folder: Path) -> MonitorModel:
    """The model folder of `genforge app monitor train` (refuses anything else with a one-line error)."""
    import numpy as np

    from genforge.apps.monitor import topics
    from genforge.apps.monitor.train import MONITOR_STAGE
    from genforge.finetune.classifier import load_classifier

    folder = Path(folder)
    manifest = read_manifest(folder, stage=MONITOR_STAGE)
    sentiment, sentiment_zh = (load_sentiment(folder / manifest[key]) if manifest.get(key) else None
                               for key in ("sentiment", "sentiment_zh"))
    tm = manifest["topic_model"]
    if tm["kind"] == "classifier":
        return MonitorModel(folder, sentiment, topic=load_classifier(folder / tm["path"]), sentiment_zh=sentiment_zh)
    info = read_json(folder / tm["path"], RETRAIN, keys=("names", "embedder", "seq_len"))
    if info.get("assign") == "encoder":
        with reading(folder / "centroids.npy", RETRAIN) as path:
            centroids = np.load(path, allow_pickle=False)
        return MonitorModel(folder, sentiment, encoder=topics.load_encoder(Path(info["embedder"])),
                            centroids=centroids, topic_names=info["names"], topic_seq_len=info["seq_len"],
                            sentiment_zh=sentiment_zh)
    vocabulary = read_json(folder / "topic_vocabulary.json", RETRAIN, kind=dict)
    with reading(folder / "topic_router.npz", RETRAIN) as path, np.load(path, allow_pickle=False) as z:
        router = topics.load_router(vocabulary, z["idf"], z["coef"], z["intercept"])
    return MonitorModel(folder, sentiment, router=router, topic_names=info["names"], sentiment_zh=sentiment_zh)


def load_sentiment(path: Path) -> tuple[Any, Any, dict[str, Any]]:
    from genforge.finetune.classifier import load_classifier

    sentiment = load_classifier(path)
    if set(sentiment[2]["labels"]) - {"negative", "neutral", "positive"} or "negative" not in sentiment[2]["labels"]:
        raise ArtifactError(f"{path}: labels {sentiment[2]['labels']} are not negative/neutral/positive")
    return sentiment
