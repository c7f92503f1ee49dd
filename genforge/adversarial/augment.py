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
augmented. Attacking thousands of texts takes hours, so copies can go to a progress file job by job as
they are made (`finetune classify` keeps one in its run folder): a killed run goes on where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from genforge.adversarial.attacks import Budget, Recipe, Victim, attack_example, build_recipe, random_edit
from genforge.adversarial.neighbours import default_encoder
from genforge.artifacts import whole_lines
from genforge.errors import ArtifactError, DataError

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


def augment_recipes(examples: list[Example], cfg: Any) -> list[Recipe]:
    """The --augment-attack recipes, once --augment-model (if any) is known to predict the data's labels: all a
    run can refuse before its first copy, so `classify` checks it before it touches its run folder."""
    from genforge.finetune.classifier import read_info
    from genforge.finetune.model import load_tokenizer

    if cfg.augment_model is not None:
        unknown = sorted({labs[0] for _, labs in examples} - set(read_info(cfg.augment_model)["labels"]))
        if unknown:
            raise DataError(f"--augment-model {cfg.augment_model} does not know the labels {unknown[:5]}")
    tokenizer = load_tokenizer(cfg.model)
    return [build_recipe(name, Budget(seed=cfg.seed), tokenizer=tokenizer, encoder=default_encoder())
            for name in dict.fromkeys(cfg.augment_attack)]


def finished_jobs(path: Path, recipes: list[str], jobs: int) -> dict[str, dict[int, str]]:
    """The copies a progress file holds: recipe -> job number -> copy. A last line without its newline is what
    a kill mid-write leaves: it is dropped, and cut from the file so that appending goes on after a whole line
    (its job is done again); any other line that is not a job of this run is an error."""
    done: dict[str, dict[int, str]] = {name: {} for name in recipes}
    if not path.is_file():
        return done
    lines, size = whole_lines(path.read_bytes())
    os.truncate(path, size)
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            copy, job = row["copy"], row["job"]
            if not (isinstance(copy, str) and isinstance(job, int) and 0 <= job < jobs):
                raise ValueError(job)
            done[row["attack"]][job] = copy
        except (ValueError, KeyError, TypeError):
            raise ArtifactError(f"{path}:{number} is not a copy job of this run: delete the file to make the "
                                "copies again, or choose another --out") from None
    return done


def augment_examples(examples: list[Example], cfg: Any, progress: Path | None = None,
                     recipes: list[Recipe] | None = None) -> list[Example]:
    """`examples` plus attacked copies as `cfg` (a ClassifyConfig) asks; unchanged without --augment-attack.

    With `progress` (a file), each finished copy job is appended to it and flushed, and the jobs it already
    holds are taken from it instead of being done again: an interrupted run's copies go on where it stopped
    (jobs are deterministic per seed, so the copies are the ones an uninterrupted run makes, in its order).
    `recipes` are `augment_recipes(examples, cfg)`, for a caller that built them already.
    """
    if not cfg.augment_attack:
        return examples
    from genforge.finetune.classifier import load_classifier
    from genforge.finetune.run import runs_on
    from genforge.models.load import check_finished_run

    recipes = augment_recipes(examples, cfg) if recipes is None else recipes
    attacked = cfg.augment_model is not None
    # (copy number, example index, attack the model?): the model's copies, then --augment-random-ratio's
    jobs = [(k, i, attacked) for k, i in copy_jobs(len(examples), cfg.augment_ratio, cfg.seed)]
    jobs += [(k, i, False) for k, i in copy_jobs(len(examples), cfg.augment_random_ratio, cfg.seed)]
    done = finished_jobs(progress, [r.name for r in recipes], len(jobs)) if progress else {r.name: {} for r in recipes}
    victim, labels = None, []
    if attacked and any(len(finished) < len(jobs) for finished in done.values()):  # loaded only if still needed
        check_finished_run(cfg.augment_model)
        model, tokenizer, info = load_classifier(cfg.augment_model)
        victim, labels = Victim(model.to(runs_on(cfg.augment_model)), tokenizer, info["seq_len"]), info["labels"]
    base, copies = Budget(seed=cfg.seed), []
    with open(progress, "a", encoding="utf-8") if progress else contextlib.nullcontext() as log:
        for recipe in recipes:
            finished, pairs = done[recipe.name], []
            with tqdm(total=len(jobs), initial=len(finished), desc=f"augment {recipe.name}", unit="text",
                      dynamic_ncols=True) as bar:
                for job, (k, i, attack) in enumerate(jobs):
                    text, labs = examples[i]
                    new = finished.get(job)
                    if new is None:
                        new = make_copy(text, labs, attack, victim, labels, recipe,
                                        dataclasses.replace(base, seed=cfg.seed + k))
                        if log:
                            log.write(json.dumps({"attack": recipe.name, "job": job, "copy": new}) + "\n")
                            log.flush()
                        bar.update()
                    if new != text:
                        pairs.append(((text, labs), (new, labs)))
            made = drop_dissimilar(recipe, base, pairs)
            if not made:
                warn_no_copies(recipe.name, len(examples))
            copies += made
    return examples + copies


def warn_no_copies(recipe: str, texts: int) -> None:
    """Say so when a recipe left every text as it was (pinyin on English data, synonym on Chinese): the run
    would otherwise train an unaugmented model that its flags and manifest call augmented."""
    import typer

    typer.secho(f"warning: --augment-attack {recipe} made no copies of the {texts} training texts (it found "
                "nothing to edit in them, or every copy was dropped by the similarity constraint): the run trains "
                "without them", fg="yellow", err=True)


def make_copy(text: str, labs: list[str], attack: bool, victim: Victim | None, labels: list[str], recipe: Recipe,
              budget: Budget) -> str:
    """One copy job: the greedy attack against the victim or, when not attacking or the model already gets
    the text wrong, a random edit."""
    if attack and (result := attack_example(text, labels.index(labs[0]), victim, recipe, budget)).status != "skipped":
        return result.adversarial
    return random_edit(text, recipe, budget)
