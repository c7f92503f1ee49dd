"""`genforge tune SPACE.yaml --trials N`: Optuna hyper-parameter search over a fine-tuning config.

The YAML declares the task, the fixed config keys and the search space:

    task: classify                     # or sft
    out: runs/tune                     # study folder (or --out)
    metric: val_macro_f1               # a manifest metric of the trial runs (default: val_loss)
    direction: maximize                # default: minimize for *loss metrics, else maximize
    pruner: median                     # median | none | {upper: X} / {lower: X} (on the intermediate score)
    base: {model: ..., data: ..., max_steps: 200, eval_every: 25}
    search:
      lr: {low: 1.0e-5, high: 1.0e-3, log: true}
      batch_size: {choices: [8, 16, 32]}
      warmup_steps: {low: 0, high: 50}    # ints when both bounds are ints
      lora_r: {choices: [0, 4, 8]}
      head: {choices: [linear, lstm]}
      model: {choices: [runs/lm-small, runs/lm-base]}

Each trial is the real command (`genforge finetune TASK --config trial.yaml`) in its own process and
folder (trials/NNNN). The tuner follows the trial's logs/metrics.jsonl: every validation record the
engine logs is reported to Optuna as the study's metric when the record has it (`val_macro_f1` ->
`macro_f1`), else as the validation loss (negated when the study maximises, so "better" points the
same way), and a trial the pruner rejects is stopped with SIGTERM, which the engine answers by checkpointing and
exiting. The study lives in SQLite (study.db): rerunning the command adds trials to it, and trials a
killed tuner left "running" are marked failed first. best.yaml is the best trial's full config
(`genforge finetune TASK --config best.yaml` reproduces it); trials.png plots score per trial.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from genforge.artifacts import atomic_write_text, begin_output, write_json, write_manifest
from genforge.config import dump_yaml, from_dict, read_yaml
from genforge.errors import ConfigError, GenforgeError
from genforge.finetune.config import ClassifyConfig, SftConfig, TuneConfig

TASKS = {"classify": ClassifyConfig, "sft": SftConfig}
SPACE_KEYS = ("task", "out", "metric", "direction", "pruner", "base", "search")


def read_space(path: Path) -> dict[str, Any]:
    """The search-space YAML, checked: task, base keys and search entries of the task's config."""
    space = read_yaml(path)
    unknown = [k for k in space if k not in SPACE_KEYS]
    if unknown:
        raise ConfigError(f"{path}: unknown key '{unknown[0]}' (known: {', '.join(SPACE_KEYS)})")
    if space.get("task") not in TASKS:
        raise ConfigError(f"{path}: 'task' must be one of {', '.join(TASKS)}; got {space.get('task')!r}")
    base, search = space.get("base") or {}, space.get("search") or {}
    if not isinstance(base, dict) or not isinstance(search, dict) or not search:
        raise ConfigError(f"{path}: 'base' must be a mapping and 'search' a non-empty mapping")
    fields = TASKS[space["task"]].__dataclass_fields__
    for key, spec in search.items():
        if key not in fields:
            raise ConfigError(f"{path}: search key '{key}' is not a {space['task']} config key")
        if not isinstance(spec, dict) or not ("choices" in spec or {"low", "high"} <= set(spec)):
            raise ConfigError(f"{path}: search '{key}' needs {{choices: [...]}} or {{low: X, high: Y}}")
    metric = space.get("metric", "val_loss")
    direction = space.get("direction", "minimize" if metric.endswith("loss") else "maximize")
    if direction not in ("minimize", "maximize"):
        raise ConfigError(f"{path}: 'direction' must be minimize or maximize; got {direction!r}")
    return {**space, "base": base, "search": search, "metric": metric, "direction": direction}


def suggest(trial: Any, search: dict[str, Any]) -> dict[str, Any]:
    params = {}
    for key, spec in search.items():
        if "choices" in spec:
            params[key] = trial.suggest_categorical(key, list(spec["choices"]))
        elif isinstance(spec["low"], int) and isinstance(spec["high"], int) and not spec.get("log"):
            params[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1))
        else:
            params[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
    return params


def make_pruner(spec: Any) -> Any:
    import optuna

    if spec in (None, "median"):
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if spec == "none":
        return optuna.pruners.NopPruner()
    if isinstance(spec, dict) and set(spec) <= {"upper", "lower"}:
        return optuna.pruners.ThresholdPruner(**{k: float(v) for k, v in spec.items()})
    raise ConfigError(f"pruner must be median, none or {{upper: X}} / {{lower: X}}; got {spec!r}")


def new_val_scores(path: Path, seen: int, metric: str, maximize: bool) -> tuple[list[tuple[int, float]], int]:
    """(step, intermediate score) of the val records of metrics.jsonl after the first `seen` lines, and
    the new line count. The score is `metric` (without its val_ prefix) if logged, else the signed loss."""
    if not path.is_file():
        return [], seen
    lines = path.read_text().splitlines()
    complete = lines if path.read_text().endswith("\n") else lines[:-1]  # a line being written waits
    found = []
    for line in complete[seen:]:
        record = json.loads(line)
        if record.get("kind") == "val":
            key = metric.removeprefix("val_")
            value = record[key] if key in record else (-record["loss"] if maximize else record["loss"])
            found.append((record["step"], value))
    return found, len(complete)


def run_trial(task: str, cfg: Any, trial: Any, metric: str, maximize: bool) -> dict[str, Any]:
    """Run one trial as `genforge finetune TASK --config` in a subprocess; prune it by its val scores."""
    import optuna

    folder = Path(cfg.out)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder.parent / f"{folder.name}.yaml", dump_yaml(cfg))
    command = [sys.executable, "-m", "genforge.cli", "finetune", task, "--config", str(folder.parent / f"{folder.name}.yaml")]
    seen, metrics_path = 0, folder / "logs" / "metrics.jsonl"
    with open(folder.parent / f"{folder.name}.log", "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        try:
            while True:
                done = proc.poll() is not None
                records, seen = new_val_scores(metrics_path, seen, metric, maximize)
                for step, value in records:
                    trial.report(value, step)
                    if not done and trial.should_prune():
                        proc.send_signal(signal.SIGTERM)  # the engine checkpoints and stops at the next step
                        proc.wait()
                        raise optuna.TrialPruned(f"pruned at step {step} (intermediate score {value:.4f})")
                if done:
                    break
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    manifest = folder / "manifest.json"
    if proc.returncode != 0 or not manifest.is_file():
        tail = (folder.parent / f"{folder.name}.log").read_text(errors="replace").strip().splitlines()[-1:]
        raise GenforgeError(f"trial {trial.number} failed: {tail[0] if tail else 'no output'}")
    return json.loads(manifest.read_text())["metrics"]


def tune(cfg: TuneConfig) -> dict[str, Any]:
    """Run `cfg.trials` more trials of the study; write best.yaml, trials.png, manifest; return the best."""
    import optuna

    space = read_space(cfg.space)
    out = Path(cfg.out or space.get("out") or "")
    if not str(out) or str(out) == ".":
        raise ConfigError("give the study folder: --out DIR (or `out:` in the YAML)")
    task, config_cls, maximize = space["task"], TASKS[space["task"]], space["direction"] == "maximize"
    started = begin_output(out)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=cfg.study_name, storage=f"sqlite:///{out.resolve() / 'study.db'}",
                                load_if_exists=True, direction=space["direction"],
                                sampler=optuna.samplers.TPESampler(seed=cfg.seed + len_trials(out, cfg)),
                                pruner=make_pruner(space.get("pruner")))
    for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(stale.number, state=optuna.trial.TrialState.FAIL)  # left by a killed tuner

    def objective(trial: Any) -> float:
        values = {**space["base"], **suggest(trial, space["search"]), "out": out / "trials" / f"{trial.number:04d}"}
        trial_cfg = from_dict(config_cls, values)
        metrics = run_trial(task, trial_cfg, trial, space["metric"], maximize)
        if metrics.get(space["metric"]) is None:
            raise ConfigError(f"trial runs report no metric '{space['metric']}' (they have: {', '.join(metrics)})")
        return float(metrics[space["metric"]])

    study.optimize(objective, n_trials=cfg.trials, catch=(GenforgeError,))
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise GenforgeError(f"no trial of study {out} finished; see the trial logs in {out / 'trials'}")
    best = study.best_trial
    best_cfg = from_dict(config_cls, {**space["base"], **best.params, "out": out / "best"})
    atomic_write_text(out / "best.yaml", dump_yaml(best_cfg))
    plot_trials(study, space["metric"], out / "trials.png")
    summary = {"best_trial": best.number, "best_value": best.value, "best_params": best.params,
               "metric": space["metric"], "direction": space["direction"], "trials": len(study.trials),
               "complete": len(complete), "pruned": sum(t.state.name == "PRUNED" for t in study.trials),
               "failed": sum(t.state.name == "FAIL" for t in study.trials)}
    write_json(out / "best.json", summary)
    write_manifest(out, "tune", cfg, inputs=[cfg.space], metrics={k: v for k, v in summary.items()
                                                                  if k != "best_params"},
                   started=started, extra={"task": task, "best_params": best.params})
    _print(summary, out)
    return summary


def len_trials(out: Path, cfg: TuneConfig) -> int:
    """Trials already in the study: a resumed study's sampler gets a fresh seed, not the first run's again."""
    import optuna

    db = out.resolve() / "study.db"
    if not db.is_file():
        return 0
    try:
        return len(optuna.load_study(study_name=cfg.study_name, storage=f"sqlite:///{db}").trials)
    except KeyError:  # the file holds other studies only
        return 0


def plot_trials(study: Any, metric: str, path: Path) -> Path:
    """trials.png: the score of each finished trial and the running best (pruned trials counted in the title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    done = [(t.number, t.value) for t in study.trials if t.state.name == "COMPLETE"]
    ax.plot(*zip(*done, strict=True), "o", label=metric)
    better = max if study.direction.name == "MAXIMIZE" else min
    ax.step([n for n, _ in done], [better(v for n, v in done if n <= m) for m, _ in done], where="post",
            label="best so far")
    pruned = sum(t.state.name == "PRUNED" for t in study.trials)
    ax.set_title(f"{len(study.trials)} trials, {pruned} pruned")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _print(summary: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"tune -> {out}", show_header=False)
    for key, value in summary.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console(stderr=True).print(table)
