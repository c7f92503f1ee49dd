"""The assistant itself: retrieve -> FAQ answer, grounded generation with citations, or hand-off.

`load_assistant(folder)` reads a built folder (index/, intent/, chat/, support.json with the calibrated
thresholds); `Assistant.stream(messages)` answers the last user message of a conversation, yielding
the answer's text as it is produced and returning the `Answer` (action, confidence, cited sources).
Multi-turn: a follow-up with (almost) no content words of its own ("and then what?", "why?") that would
be handed off on its own is retrieved together with the previous user message; any other
message stands alone, so a new question is not dragged back to the old topic.
Which entry answers: retrieval's top hit, unless the intent classifier (trained on the FAQ's question
variants) names an entry with at least the calibrated probability; a classifier sees every paraphrase at
training time and usually beats nearest-neighbour retrieval on the entry, while retrieval still finds
passages without intent labels and gives the citations. Databases, safety and HTTP are the caller's
(service.py, routes.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genforge.apps.support.config import HANDOFF, REBUILD
from genforge.apps.support.index import Hit, HybridIndex, load_encoder, load_index
from genforge.apps.support.ingest import tokens
from genforge.apps.support.ood import OutOfScope, pooling
from genforge.apps.support.ood import load as load_ood
from genforge.apps.support.policy import OOS, Thresholds, decide
from genforge.artifacts import read_json, reading
from genforge.errors import ArtifactError, ConfigError

META = "support.json"
FOLLOW_UP_TERMS = 2  # a message with fewer content terms may lean on the previous user message
TOP_K = 5


@dataclass
class Answer:
    action: str  # "faq" | "generate" | "handoff" | "blocked"
    text: str
    confidence: float = 0.0
    oos_score: float | None = None
    entry: str | None = None  # the top FAQ entry / chunk
    query: str = ""  # what was retrieved with
    sources: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    ticket: int | None = None
    reason: str = ""  # why it was handed off


def passages_block(hits: list[Hit], chars: int) -> str:
    """The numbered passages of a prompt (the same text at training and answering time)."""
    lines = []
    for n, hit in enumerate(hits, 1):
        p = hit.passage
        body = f"Q: {p.text}\nA: {p.answer}" if p.kind == "faq" else p.text
        lines.append(f"[{n}] {body[:chars]}")
    return "\n".join(lines)


def prompt_messages(system: str, hits: list[Hit], chars: int, conversation: list[dict[str, str]]) -> list[dict]:
    """Chat-model messages: the system prompt with the passages, then the conversation (last turns)."""
    head = {"role": "system", "content": f"{system}\n\nKnowledge base:\n{passages_block(hits, chars)}"}
    return [head, *[m for m in conversation if m["role"] in ("user", "assistant")]]


def citations(hits: list[Hit]) -> list[dict[str, Any]]:
    return [{"n": n, "entry": h.passage.entry, "source": h.passage.source, "kind": h.passage.kind,
             "text": h.passage.text[:200], "score": round(h.cosine, 4)} for n, h in enumerate(hits, 1)]


@dataclass
class Intents:
    """What the intent classifier says about each query."""

    oos: np.ndarray  # out-of-scope score: ood.py's two-view distance, else P(oos) or 1 - the top probability
    entry: list[str]  # the most probable in-scope intent (an FAQ entry id)
    prob: np.ndarray  # its probability
    log_distances: np.ndarray | None = None  # (queries, views) behind `oos` when the ood model scored it


@dataclass
class Assistant:
    folder: Path
    index: HybridIndex
    thresholds: Thresholds
    meta: dict[str, Any]
    classifier: tuple[Any, Any, dict] | None = None
    decoder: Any = None
    ood: OutOfScope | None = None  # the fitted out-of-scope model
    lock: threading.Lock = field(default_factory=threading.Lock)  # one forward pass at a time (torch on CPU)

    def intents(self, queries: list[str], vectors: np.ndarray) -> Intents | None:
        """The intent classifier's signals on `queries` (their retrieval `vectors` given; None without a
        classifier); the out-of-scope score is ood.py's when it was fitted, else P(oos)."""
        if self.classifier is None:
            return None
        from genforge.finetune.classifier import predict_probs

        model, tokenizer, info = self.classifier
        labels = info["labels"]
        log_distances = None
        if self.ood:
            probs, features = predict_probs(model, tokenizer, queries, seq_len=info["seq_len"], multi_label=False,
                                            features=pooling(info))
            log_distances = self.ood.log_distances(features, vectors)
            oos = self.ood.score(log_distances)
        else:
            probs = predict_probs(model, tokenizer, queries, seq_len=info["seq_len"], multi_label=False)
            oos = probs[:, labels.index(OOS)] if OOS in labels else 1.0 - probs.max(1)
        inscope = [i for i, label in enumerate(labels) if label != OOS]
        best = [inscope[b] for b in probs[:, inscope].argmax(1)]
        return Intents(oos, [labels[b] for b in best], probs[np.arange(len(queries)), best], log_distances)

    def signals(self, queries: list[str], k: int = TOP_K) -> tuple[list[list[Hit]], Intents | None, np.ndarray]:
        """Retrieval's hits (not routed), the intent signals and the query vectors of many standalone queries
        (calibration, evaluation)."""
        with self.lock:
            vectors = self.index.encoder(queries)
            return self.index.search_many(queries, k, vectors), self.intents(queries, vectors), vectors

    def route(self, hits: list[Hit], intent: str, prob: float, vector: np.ndarray) -> list[Hit]:
        """Put the classifier's intent first when it is confident enough (its entry's best passage, fetched
        when retrieval did not rank it in the top k); otherwise retrieval's order stands."""
        if prob < self.thresholds.intent or intent not in self.index.entries:
            return hits
        rest = [h for h in hits if h.passage.entry != intent]
        chosen = next((h for h in hits if h.passage.entry == intent), None) or self.index.hit_for(intent, vector)
        return [chosen, *rest[:len(hits) - 1]]

    def retrieve(self, conversation: list[dict[str, str]]) -> tuple[str, list[Hit], np.ndarray, Intents | None]:
        """(query, hits, query vector, intent signals) of the last user message; a follow-up (fewer than
        FOLLOW_UP_TERMS content terms) that would be handed off on its own, for a low confidence or an
        out-of-scope score (calibration often leaves the hand-off to the latter), is retrieved with the previous
        user message."""
        users = [m["content"] for m in conversation if m["role"] == "user"]
        if not users:
            raise ConfigError("the conversation has no user message to answer")
        query = users[-1]
        vector = self.index.encoder([query])[0]
        hits = self.index.search(query, TOP_K, vector)
        intents = self.intents([query], vector[None])
        if len(users) > 1 and len(tokens(query)) < FOLLOW_UP_TERMS and self._hands_off(hits, intents):
            query = f"{users[-2]} {users[-1]}"
            vector = self.index.encoder([query])[0]
            hits = self.index.search(query, TOP_K, vector)
            intents = self.intents([query], vector[None])
        return query, hits, vector, intents

    def _hands_off(self, hits: list[Hit], intents: Intents | None) -> bool:
        """Whether retrieval's hits and the intent signals of one query would hand it off."""
        confidence = hits[0].cosine if hits else -1.0
        oos = None if intents is None else float(intents.oos[0])
        return decide(confidence, oos, hits[0].passage.kind if hits else None, self.thresholds, True) == "handoff"

    def stream(self, conversation: list[dict[str, str]], max_new_tokens: int = 160) -> Generator[str, None, Answer]:
        """Yield the answer's text as it comes; return the Answer (its `text` is the whole answer)."""
        started = time.perf_counter()
        with self.lock:
            query, hits, vector, intents = self.retrieve(conversation)
        if intents is not None and hits:
            hits = self.route(hits, intents.entry[0], float(intents.prob[0]), vector)
        oos = None if intents is None else float(intents.oos[0])
        top = hits[0] if hits else None
        confidence = top.cosine if top else 0.0
        action = decide(confidence, oos, top.passage.kind if top else None, self.thresholds, self.decoder is not None)
        answer = Answer(action, "", confidence, oos, top.passage.entry if top else None, query)
        if action == "handoff":
            low = confidence < self.thresholds.handoff_confidence
            answer.reason = (f"low retrieval confidence {confidence:.3f} < {self.thresholds.handoff_confidence:.3f}"
                             if low or oos is None else f"out of scope (score {oos:.3f} >= {self.thresholds.oos:.3f})")
            answer.text = HANDOFF.format(ticket="-")  # the service opens the ticket and names it
        elif action == "faq":
            answer.text, answer.sources = top.passage.answer, citations(hits[:1])
            yield answer.text
        else:
            used = hits[:self.meta["prompt_passages"]]
            answer.sources = citations(used)
            answer.text = yield from self._generate(conversation, used, max_new_tokens)
            cited = "\n\nSources: " + "; ".join(f"[{c['n']}] {c['source']}" for c in answer.sources)
            answer.text += cited
            yield cited
        answer.seconds = time.perf_counter() - started
        return answer

    def _generate(self, conversation: list[dict[str, str]], hits: list[Hit], max_new_tokens: int) -> Generator:
        from genforge.finetune.chat import prompt_ids
        from genforge.generate.api import iter_batch
        from genforge.generate.config import SamplingParams

        messages = prompt_messages(self.meta["system"], hits, self.meta["passage_chars"], conversation[-5:])
        room = min(max_new_tokens, max(1, (self.decoder.context or 2 * max_new_tokens) // 3))
        pieces = []
        with self.lock:
            ids = prompt_ids(self.decoder, messages, room)
            for _, piece in iter_batch(self.decoder, [""], SamplingParams(temperature=0.0, repetition_penalty=1.1),
                                       room, chat=True, watch=True, ids=[ids]):
                pieces.append(piece)
                yield piece
        return "".join(pieces).strip()

    def answer(self, conversation: list[dict[str, str]], max_new_tokens: int = 160) -> Answer:
        run = self.stream(conversation, max_new_tokens)
        while True:
            try:
                next(run)
            except StopIteration as end:
                return end.value


def read_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / META
    if not path.is_file():
        raise ArtifactError(f"{folder} has no {META}: not a support assistant (make one with "
                            "`genforge app support build`)")
    meta = read_json(path, REBUILD, keys=("encoder", "system", "prompt_passages", "passage_chars", "thresholds"))
    with reading(path, REBUILD):  # the thresholds are numbers (or null): fail here, not mid-answer
        if not isinstance(meta["thresholds"], dict):
            raise TypeError("'thresholds' is not an object")
        Thresholds.from_dict(meta["thresholds"])
    return meta


def load_assistant(folder: Path, generate: bool = True, finished: bool = True) -> Assistant:
    """The assistant of a built folder; `generate=False` skips loading the chat model, `finished=False`
    skips the manifest check (build calibrates the assistant before it marks the folder complete)."""
    from genforge.artifacts import read_manifest

    folder = Path(folder)
    meta = read_meta(folder)
    if finished:
        read_manifest(folder, stage="app.support.build")
    encoder = load_encoder(Path(meta["encoder"]))
    classifier = ood = None
    if (folder / "intent").is_dir():
        from genforge.finetune.classifier import load_classifier

        classifier, ood = load_classifier(folder / "intent"), load_ood(folder)
    decoder = None
    if generate and (folder / "chat").is_dir():
        from genforge.finetune.chat import load_chat_decoder

        decoder = load_chat_decoder(folder / "chat")
    return Assistant(folder, load_index(folder / "index", encoder), Thresholds.from_dict(meta["thresholds"]), meta,
                     classifier, decoder, ood)
