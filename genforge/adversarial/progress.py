"""The progress of a `robustness eval` run, so that an interrupted run resumes (writes are atomic; long runs resume).

A run starts by writing `progress.json` into its folder: the fingerprint of everything its results depend on
(the classifier's files, the data, the sample and budget settings, the attacks) and, as each attack
finishes, that attack's report entry. While an attack runs, each finished example's result is appended to
`adversarial_<attack>.partial.jsonl` and flushed, so a kill loses at most the example in flight; when the
attack finishes its `adversarial_<attack>.jsonl` is written whole and the partial file removed.

`--resume` continues only a run with the same fingerprint: finished attacks are taken as they are, the
interrupted one goes on after its last complete line. Attacks are deterministic per (seed, recipe, text),
so the resumed report is the one an uninterrupted run gives, but for `seconds` (summed over the sessions).
`progress.json` goes once the manifest is written: a folder holding it without a manifest is unfinished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genforge.adversarial.attacks import AttackResult
from genforge.adversarial.config import RobustnessConfig
from genforge.adversarial.neighbours import default_encoder
from genforge.artifacts import (
    check_resume_folder,
    check_same_settings,
    model_sha256,
    read_json,
    reading,
    sha256_file,
    whole_lines,
    write_json,
)
from genforge.errors import ArtifactError

PROGRESS = "progress.json"
RESULT_FIELDS = [f.name for f in dataclasses.fields(AttackResult)]


def partial_path(out: Path, attack: str) -> Path:
    return Path(out) / f"adversarial_{attack}.partial.jsonl"


def fingerprint(cfg: RobustnessConfig, attacks: list[str]) -> dict[str, Any]:
    """What the run's results depend on. --batch-size is left out: it changes speed and memory, and results
    at most by float rounding (a resume on a smaller device may need a smaller one)."""
    encoder = cfg.encoder or default_encoder()
    return {"model_sha256": model_sha256(cfg.model), "data_sha256": sha256_file(cfg.data),
            "text_field": cfg.text_field, "label_field": cfg.label_field, "seed": cfg.seed,
            "max_examples": cfg.max_examples, "max_queries": cfg.max_queries, "max_ratio": cfg.max_ratio,
            "min_similarity": cfg.min_similarity, "candidates": cfg.candidates, "synonym_source": cfg.synonym_source,
            "encoder": str(encoder) if encoder else None, "attack": attacks}


@dataclass
class Partial:
    """The examples an interrupted session finished of one attack: results in example order, the attack
    seconds spent on them, and the length in bytes of the file's complete lines (where appending goes on)."""

    results: list[AttackResult] = field(default_factory=list)
    seconds: float = 0.0
    size: int = 0


def read_partial(path: Path, examples: list[tuple[str, int]]) -> Partial:
    """The complete lines of a partial file. A last line without its newline is what a kill mid-write
    leaves, and is dropped (its example is attacked again); any other unreadable line is an error."""
    remedy = "delete it to attack that recipe's examples again, or choose another --out"
    with reading(path, remedy):
        lines, size = whole_lines(path.read_bytes())
        partial = Partial(size=size)
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
                result = AttackResult(**{k: row[k] for k in RESULT_FIELDS})
                partial.seconds += float(row["seconds"])
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"line {number} is no attack result ({type(e).__name__}: {e})") from None
            if number > len(examples) or (result.text, result.label) != examples[number - 1]:
                raise ValueError(f"line {number} is not the result of the run's example {number}")
            partial.results.append(result)
    return partial


@dataclass
class Progress:
    """The run's progress file and partial files; `open_progress` reads them, the methods write them."""

    out: Path
    fingerprint: dict[str, Any]
    resumed: bool = False
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)  # attack -> its report entry
    partials: dict[str, Partial] = field(default_factory=dict)  # unfinished attack -> its finished examples

    def begin(self) -> None:
        """Make the folder match this run (call it after `begin_output`): a new run drops an earlier run's
        progress; a resumed one cuts a torn last line off its partial files so appending goes on cleanly."""
        if self.resumed:
            for name in self.finished:  # a kill between recording an attack and removing its partial file
                partial_path(self.out, name).unlink(missing_ok=True)
            for name, partial in self.partials.items():
                with open(partial_path(self.out, name), "r+b") as f:
                    f.truncate(partial.size)
            return
        for path in self.out.glob("adversarial_*.partial.jsonl"):
            path.unlink()
        self.save()

    def save(self) -> None:
        write_json(self.out / PROGRESS, {"fingerprint": self.fingerprint, "finished": self.finished})

    @contextlib.contextmanager
    def appending(self, attack: str) -> Iterator[Callable[[AttackResult, float], None]]:
        """Yield `add(result, seconds)`, which appends one example's result to the attack's partial file and
        flushes it (a kill then loses at most the example in flight)."""
        with open(partial_path(self.out, attack), "a", encoding="utf-8") as f:

            def add(result: AttackResult, seconds: float) -> None:
                f.write(json.dumps(dataclasses.asdict(result) | {"seconds": seconds}, ensure_ascii=False) + "\n")
                f.flush()

            yield add

    def finish(self, attack: str, entry: dict[str, Any]) -> None:
        """Record a finished attack (its adversarial_<attack>.jsonl is written) and drop its partial file."""
        self.finished[attack] = entry
        self.save()
        partial_path(self.out, attack).unlink(missing_ok=True)

    def end(self) -> None:
        """The manifest is written: nothing is left to resume."""
        (self.out / PROGRESS).unlink(missing_ok=True)


def open_progress(cfg: RobustnessConfig, current: dict[str, Any], examples: list[tuple[str, int]]) -> Progress:
    """The progress of the run in `cfg.out`, as `finetune --resume` treats a folder: --resume needs an
    unfinished run with the same fingerprint; a new run refuses to overwrite an unfinished one, and redoes a
    finished one from scratch. Reads only, so a refused run leaves the folder as it was."""
    path = cfg.out / PROGRESS
    check_resume_folder(cfg.out, resume=cfg.resume, started=path.is_file(), marker=PROGRESS)
    if not cfg.resume:
        return Progress(cfg.out, current)
    remedy = "delete the folder to start the run anew, or choose another --out"
    saved = read_json(path, remedy, keys=("fingerprint", "finished"))
    if not (isinstance(saved["fingerprint"], dict) and isinstance(saved["finished"], dict)):
        raise ArtifactError(f"{path} is corrupt (fingerprint and finished are not JSON objects): {remedy}")
    check_same_settings(saved["fingerprint"], current, files={"model_sha256": f"the classifier {cfg.model}",
                                                              "data_sha256": f"the data {cfg.data}"})
    finished = {name: entry for name, entry in saved["finished"].items()
                if (cfg.out / f"adversarial_{name}.jsonl").is_file()}  # a deleted one is attacked again
    partials = {name: read_partial(partial_path(cfg.out, name), examples) for name in current["attack"]
                if name not in finished and partial_path(cfg.out, name).is_file()}
    return Progress(cfg.out, current, True, finished, partials)
