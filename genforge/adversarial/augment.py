"""Adversarial data augmentation for `finetune classify`: attacked copies of training texts, same labels.

Per `--augment-attack` recipe, `--augment-ratio` R copies per training example: R = 0.5 gives a seeded
half of them one copy, R = 2.5 gives every example two and a seeded half a third. Copy k of a text is
drawn with seed `--seed` + k, so the copies of one text differ (other typos, other positions). Without
`--augment-model` a copy is model-free: the recipe's edits applied at random to a fifth of the text's
units (synonym copies whose sentence embedding drifts below the attacks' similarity threshold are
dropped). With `--augment-model DIR`, a classifier trained on the same task (typically a first run),
the copies are real adversarial examples, the greedy attack against that model (its best attempt when
no flip is found), as in the adversarial-training experiments of TextFooler and DeepWordBug; then
`--augment-random-ratio` adds random-edit copies beside them (an attack's edits depend on the label it
flips: romanising syllables is what flips positive Chinese reviews, so attacked copies alone teach
"Latin syllables = positive"; random copies of both classes break that link). Validation data is never
augmented.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from tqdm.auto import tqdm

from genforge.adversarial.attacks import Budget, Recipe, Victim, attack_example, build_recipe, random_edit
from genforge.adversarial.neighbours import default_encoder
from genforge.errors import DataError

Example = tuple[str, list[str]]


def drop_dissimilar(recipe: Recipe, budget: Budget, pairs: list[tuple[Example, Example]]) -> list[Example]:
    """The copies of (original, copy) pairs that keep the recipe's meaning constraint."""
    if recipe.similarity is None or not pairs:
        return [copy for _, copy in pairs]
    originals = recipe.similarity.embed([o[0] for o, _ in pairs])
    copies = recipe.similarity.embed([c[0] for _, c in pairs])
    sims = (originals * copies).sum(1)
    return [copy for (_, copy), s in zip(pairs, sims.tolist(), strict=True) if s >= budget.min_similarity]


def copy_jobs(n: int, ratio: float, seed: int) -> list[tuple[int, int]]:
    """(copy number k, example index) pairs: `int(ratio)` copies of every example, then the fractional part
    as a seeded sample of examples (the same sample as ratio <= 1 draws, for the same seed)."""
    whole, rest = int(ratio), ratio - int(ratio)
    jobs = [(k, i) for k in range(whole) for i in range(n)]
    return jobs + [(whole, i) for i in sorted(random.Random(f"augment:{seed}").sample(range(n), round(rest * n)))]


def augment_examples(examples: list[Example], cfg: Any) -> list[Example]:
    """`examples` plus attacked copies as `cfg` (a ClassifyConfig) asks; unchanged without --augment-attack."""
    if not cfg.augment_attack:
        return examples
    from genforge.finetune.classifier import load_classifier
    from genforge.finetune.model import load_tokenizer
    from genforge.finetune.run import device

    base, victim, labels = Budget(seed=cfg.seed), None, []
    if cfg.augment_model is not None:
        model, tokenizer, info = load_classifier(cfg.augment_model)
        victim, labels = Victim(model.to(device()), tokenizer, info["seq_len"]), info["labels"]
        unknown = sorted({labs[0] for _, labs in examples} - set(labels))
        if unknown:
            raise DataError(f"--augment-model {cfg.augment_model} does not know the labels {unknown[:5]}")
    # (copy number, example index, attack the model?): the model's copies, then --augment-random-ratio's
    jobs = [(k, i, victim is not None) for k, i in copy_jobs(len(examples), cfg.augment_ratio, cfg.seed)]
    jobs += [(k, i, False) for k, i in copy_jobs(len(examples), cfg.augment_random_ratio, cfg.seed)]
    tokenizer = load_tokenizer(cfg.model)
    copies: list[Example] = []
    for name in dict.fromkeys(cfg.augment_attack):
        recipe = build_recipe(name, base, tokenizer=tokenizer, encoder=default_encoder())
        pairs = []
        for k, i, attacked in tqdm(jobs, desc=f"augment {name}", unit="text", dynamic_ncols=True):
            text, labs = examples[i]
            budget = dataclasses.replace(base, seed=cfg.seed + k)
            if attacked and (result := attack_example(text, labels.index(labs[0]), victim, recipe,
                                                      budget)).status != "skipped":
                new = result.adversarial
            else:  # no model, or it already gets this text wrong: a random edit
                new = random_edit(text, recipe, budget)
            if new != text:
                pairs.append(((text, labs), (new, labs)))
        copies += drop_dissimilar(recipe, base, pairs)
    return examples + copies
