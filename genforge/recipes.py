"""`genforge run RECIPE.yaml`: a chain of stages in one run folder, wired by artifact kind.

A recipe is a list of steps; each step names a stage and gives that stage's config keys. Inputs the
step does not set are wired from the latest artifact of the right kind (the prepared data, the
tokenizer, the model), and each step writes to `RUN/<step name>`. Lineage therefore chains by itself.
A step whose folder already holds a finished manifest with the same config is skipped, and an
unfinished training step is resumed, so rerunning an interrupted recipe continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from genforge.artifacts import MANIFEST, begin_output, write_manifest
from genforge.config import Config, check_needs, field, from_dict, given_keys, read_yaml, to_dict
from genforge.errors import ConfigError, Stopped


@dataclass(frozen=True)
class Stage:
    """How a recipe runs one stage: its config class, its API function and how it is wired."""

    config: str  # "module:Class"
    run: str  # "module:function"
    consumes: dict[str, str]  # config field -> artifact kind it is wired from
    produces: str | None = None  # artifact kind its `out` folder becomes (None: writes no folder)
    out_into: str | None = None  # writes into the folder this config field names, not its own (data.pack: data)


STAGES: dict[str, Stage] = {
    "data.prepare": Stage("genforge.data.config:PrepareConfig", "genforge.data.prepare:prepare", {}, "data"),
    "tokenizer.train": Stage("genforge.data.config:TokenizerConfig", "genforge.data.tokenizer:train_tokenizer",
                             {"data": "data"}, "tokenizer"),
    "data.pack": Stage("genforge.data.config:PackConfig", "genforge.data.pack:pack",
                       {"data": "data", "tokenizer": "tokenizer"}, out_into="data"),
    "pretrain": Stage("genforge.train.config:PretrainConfig", "genforge.train.pretrain:pretrain",
                      {"data": "data"}, "model"),
    "finetune.sft": Stage("genforge.finetune.config:SftConfig", "genforge.finetune.sft:sft",
                          {"model": "model"}, "model"),
    "finetune.dpo": Stage("genforge.finetune.config:DpoConfig", "genforge.finetune.dpo:dpo",
                          {"model": "model"}, "model"),
    "finetune.classify": Stage("genforge.finetune.config:ClassifyConfig", "genforge.finetune.classify:classify",
                               {"model": "model"}, "classifier"),
    "compress": Stage("genforge.compress.config:CompressConfig", "genforge.compress.run:compress",
                      {"model": "model", "eval_data": "data"}, "model"),
    "eval": Stage("genforge.train.config:EvalConfig", "genforge.train.evaluate:evaluate",
                  {"model": "model", "data": "data"}),
    "generate": Stage("genforge.generate.config:GenerateConfig", "genforge.generate.api:generate_from_config",
                      {"model": "model"}),
    "app.monitor.train": Stage("genforge.apps.monitor.config:MonitorTrainConfig", "genforge.apps.monitor.train:train",
                               {}, "monitor"),
    "app.monitor.replay": Stage("genforge.apps.monitor.config:MonitorReplayConfig",
                                "genforge.apps.monitor.replay:replay", {}, "monitor-stream"),
    "app.monitor.run": Stage("genforge.apps.monitor.config:MonitorRunConfig", "genforge.apps.monitor.run:run",
                             {"model": "monitor"}),  # blocking: serves until Ctrl-C (or --once)
    "app.recommend.build": Stage("genforge.apps.recommend.config:BuildConfig", "genforge.apps.recommend.build:build",
                                 {}, "recommender"),
    "app.recommend.eval": Stage("genforge.apps.recommend.config:EvalConfig",
                                "genforge.apps.recommend.evaluate:evaluate", {"model": "recommender"},
                                "recommend-eval"),
    "app.recommend.serve": Stage("genforge.apps.recommend.config:RecServeConfig",
                                 "genforge.apps.recommend.serve:serve",
                                 {"model": "recommender"}),  # blocking: serves until Ctrl-C
    "app.support.from_bitext": Stage("genforge.apps.support.config:FromBitextConfig",
                                     "genforge.apps.support.bitext:from_bitext", {}, "support-data"),
    "app.support.build": Stage("genforge.apps.support.config:BuildConfig", "genforge.apps.support.build:build",
                               {}, "assistant"),
    "app.support.eval": Stage("genforge.apps.support.config:SupportEvalConfig",
                              "genforge.apps.support.evaluate:evaluate", {"assistant": "assistant"}),
    "app.support.serve": Stage("genforge.apps.support.config:SupportServeConfig",
                               "genforge.apps.support.server:serve",
                               {"assistant": "assistant"}),  # blocking: serves until Ctrl-C
}


@dataclass
class RunConfig(Config):
    recipe: Path = field(None, help="Recipe YAML: a list of `steps`, each with a `stage` and its config keys",
                         argument=True)
    out: Path | None = field(None, help="Run folder (default: runs/<recipe name>)")
    only: list[str] = field(default_factory=list, help="Run only these step names (repeatable)")

    def check(self) -> None:
        if self.recipe is None:
            raise ConfigError("give a recipe file: genforge run RECIPE.yaml")


def _load(ref: str) -> Any:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _parse_steps(recipe: dict[str, Any], path: Path) -> list[tuple[str, str, dict[str, Any]]]:
    unknown = set(recipe) - {"name", "description", "steps"}
    if unknown:
        raise ConfigError(f"unknown recipe key '{sorted(unknown)[0]}' in {path} (known: name, description, steps)")
    steps = recipe.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ConfigError(f"recipe {path} needs a non-empty list `steps`")
    parsed, names = [], set()
    for i, step in enumerate(steps, 1):
        if not isinstance(step, dict) or "stage" not in step:
            raise ConfigError(f"step {i} of {path} needs a `stage` (one of {', '.join(STAGES)})")
        step = dict(step)
        stage = step.pop("stage")
        if stage not in STAGES:
            raise ConfigError(f"step {i} of {path}: unknown stage '{stage}' (one of {', '.join(STAGES)})")
        name = folder_name(step.pop("name", STAGES[stage].produces or stage.split(".")[-1]), f"step {i} of {path}")
        if name in names:
            raise ConfigError(f"step {i} of {path}: duplicate step name '{name}' (give each a `name`)")
        names.add(name)
        parsed.append((name, stage, step))
    return parsed


def folder_name(value: Any, where: str) -> str:
    """A recipe or step name, which becomes a folder of the run: a plain name, so that no step writes
    outside the run folder (`../x`, `/tmp/x`) or into another step's (`a/b`)."""
    name = str(value)
    if not name or name in (".", "..") or any(c in name for c in "/\\") or name != name.strip():
        raise ConfigError(f"{where}: name {name!r} must be a plain folder name (no '/', '\\', '.' or '..', "
                          "no surrounding spaces)")
    return name


# what a resumable stage writes first, so a step folder holding one of them has a run to continue: training
# checkpoints, classify's kept preparation (copies, teacher logits), the monitor's training settings, the
# record of `data prepare`'s partial files
STARTED = ("checkpoints", "logs/prepared.json", "train_settings.json", "prepare.partial.json")


def _finished_at(path: Path) -> dt.datetime | None:
    """When the artifact whose manifest is `path` finished (None: not a finished artifact)."""
    try:
        return dt.datetime.fromisoformat(json.loads(path.read_text(encoding="utf-8"))["finished"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def redone_since(out: Path, manifest_name: str, started: dt.datetime, config: Any, tokens: bool = True
                 ) -> Path | None:
    """An artifact folder the step reads (any folder a config value names: its data, tokenizer, base model)
    that finished after the step started: redone upstream since, so the step's output is stale even though
    its config, which names inputs only by path, is unchanged. A data folder's pack.json counts only for a
    step that reads its tokens (`tokens`; the tokenizer reads the text). Manifests time runs to the
    millisecond (older ones to the second: an input finished in the second such a step started counts as
    older, as within one run a step starts after its inputs)."""
    own = out / manifest_name
    values = [v for k, v in to_dict(config).items() if k != "out"]
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str) or not item or not Path(item).is_dir():
                continue
            for name in (MANIFEST, "pack.json") if tokens else (MANIFEST,):  # a data folder: text, tokens
                manifest = Path(item) / name
                if manifest != own and (finished := _finished_at(manifest)) and finished > started:
                    return Path(item)
    return None


def finished_with_same_config(out: Path, manifest_name: str, config: Any, tokens: bool = True) -> bool:
    """Whether `out` holds this step's finished artifact, made with this config from inputs not redone since."""
    path = out / manifest_name
    if not path.is_file():
        return False
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        saved = manifest.get("config") or {}
        started = dt.datetime.fromisoformat(manifest.get("started") or manifest["finished"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
        return False
    wanted = to_dict(config)
    for values in (saved, wanted):
        values.pop("resume", None)  # a run finished after a resume is the same run
        if values.get("epochs"):  # fine-tuning records the steps it derived from --epochs
            values.pop("max_steps", None)
    if saved != wanted:
        return False
    if (stale := redone_since(out, manifest_name, started, config, tokens)) is not None:
        typer.echo(f"{stale} was redone after {out} was made: redoing it")
        return False
    return True


@dataclass(frozen=True)
class PlannedStep:
    """A step of a recipe with its config checked and its inputs wired, before any step runs."""

    name: str
    stage: str
    config: Any | None  # None: a step --only leaves out
    out: Path


def plan_steps(steps: list[tuple[str, str, dict[str, Any]]], run_dir: Path, only: list[str]) -> list[PlannedStep]:
    """Every step's config, wired to the folders the earlier steps will write, checked before the first step
    runs: a bad key in the last step must not wait for the first ones to train. Only what a config checks by
    itself is checked here (keys, types, choices, ranges, flags without effect); whether an input folder
    holds what the step needs is the stage's own check when it runs, once the earlier steps made it."""
    artifacts: dict[str, Path] = {}
    planned = []
    for name, stage_name, written in steps:
        stage = STAGES[stage_name]
        config_cls = _load(stage.config)
        fields = {f.name for f in dataclasses.fields(config_cls)}
        written = {k.replace("-", "_"): v for k, v in written.items()}
        values = dict(written)
        for key, kind in stage.consumes.items():
            if key not in values and kind in artifacts:
                values[key] = str(artifacts[kind])
        out = run_dir / name
        if "out" in fields and stage.produces:  # eval/generate print their results instead
            values.setdefault("out", str(out))
        config = None
        if not only or name in only:
            try:
                config = from_dict(config_cls, values)
                check_needs(config, given_keys(config, written))
            except ConfigError as e:
                raise ConfigError(f"step '{name}': {e}") from None
            out = Path(getattr(config, stage.out_into or "out", None) or out)
        else:
            out = Path(values.get("out", out))
        if stage.produces:
            artifacts[stage.produces] = out
        planned.append(PlannedStep(name, stage_name, config, out))
    return planned


def run_step(step: PlannedStep, again: str) -> None:
    """Run one planned step, unless its folder holds its finished artifact; resume its unfinished run.
    `again` is the command that continues the recipe, told when the step is stopped."""
    stage, config = STAGES[step.stage], step.config
    typer.secho(f"\n== step {step.name} ({step.stage}) ==", bold=True)
    manifest_name = "pack.json" if step.stage == "data.pack" else MANIFEST
    tokens = step.stage not in ("tokenizer.train", "data.pack")  # they read a data folder's text only
    if (stage.produces or stage.out_into) and finished_with_same_config(step.out, manifest_name, config, tokens):
        typer.echo(f"already done: {step.out} (delete it to redo)")
        return
    if (hasattr(config, "resume") and not (step.out / MANIFEST).exists()
            and any((step.out / m).exists() for m in STARTED)):
        config = dataclasses.replace(config, resume=True)
        typer.echo(f"resuming the unfinished run in {step.out}")
    step_start = time.time()
    try:
        _load(stage.run)(config)
    except (Stopped, KeyboardInterrupt) as e:  # the step's own advice (--resume) is not this command's
        raise Stopped(f"step '{step.name}' stopped: `{again}` continues (finished steps are skipped, a training "
                      "step resumes)", e.exit_code - 128 if isinstance(e, Stopped) else signal.SIGINT) from None
    typer.echo(f"step {step.name} took {time.time() - step_start:.1f}s")


def run_recipe(cfg: RunConfig) -> dict[str, Path]:
    """Run every step of a recipe; returns the artifact folder of each kind it produced."""
    recipe = read_yaml(cfg.recipe)
    steps = _parse_steps(recipe, cfg.recipe)
    if unknown := [n for n in cfg.only if n not in {name for name, _, _ in steps}]:
        raise ConfigError(f"--only {unknown[0]}: {cfg.recipe} has no step of that name "
                          f"(its steps: {', '.join(name for name, _, _ in steps)})")
    run_dir = cfg.out or Path("runs") / folder_name(recipe.get("name") or cfg.recipe.stem, f"recipe {cfg.recipe}")
    planned = plan_steps(steps, run_dir, cfg.only)  # before the run folder or any step's output exists
    started = begin_output(run_dir, "run")
    again = f"genforge run {cfg.recipe}" + (f" --out {cfg.out}" if cfg.out else "")
    artifacts: dict[str, Path] = {}
    for step in planned:
        if step.config is not None:
            run_step(step, again)
        if STAGES[step.stage].produces:
            artifacts[STAGES[step.stage].produces] = step.out
    write_manifest(run_dir, "run", cfg, started=started,
                   extra={"recipe": to_dict(recipe), "artifacts": {k: str(v) for k, v in artifacts.items()}})
    typer.secho(f"\nrun finished: {run_dir}", fg="green")
    for kind, path in artifacts.items():
        typer.echo(f"  {kind:<10} {path}")
    if "model" in artifacts:
        typer.secho(f"serve it: genforge serve --model {artifacts['model']}", bold=True)
    return artifacts


def register(app: typer.Typer) -> None:
    from genforge.cli import add_stage_command

    add_stage_command(app, "run", RunConfig, run="genforge.recipes:run_recipe",
                      help="Run a recipe: a chain of stages (prepare -> tokenizer -> pack -> pretrain -> eval ...) "
                           "in one run folder with lineage; rerunning skips finished steps and resumes training.",
                      examples=["genforge run recipes/quickstart.yaml --out runs/quickstart"])
