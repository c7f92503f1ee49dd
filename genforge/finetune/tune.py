"""`genforge tune SPACE.yaml --trials N`: Optuna hyper-parameter search over a fine-tuning config.

The YAML declares the task, the fixed config keys and the search space:

    task: classify                     # or sft, dpo
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

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from genforge.artifacts import (
    atomic_write_text,
    begin_output,
    check_output,
    whole_lines,
    write_json,
    write_manifest,
)
from genforge.config import check_needs, dump_yaml, from_dict, given_keys, read_yaml, without_moot
from genforge.errors import ArtifactError, ConfigError, GenforgeError, Stopped
from genforge.finetune.config import ClassifyConfig, DpoConfig, SftConfig, TuneConfig
from genforge.train.logs import diverged, read_metrics

TASKS = {"classify": ClassifyConfig, "sft": SftConfig, "dpo": DpoConfig}
SPACE_KEYS = ("task", "out", "metric", "direction", "pruner", "base", "search")
METRICS = {  # the numeric metrics of each task's manifest a study can optimise
    "classify": ("val_macro_f1", "val_accuracy", "val_loss", "best_step", "steps", "train_seconds"),
    "sft": ("val_loss", "best_step", "steps", "train_seconds"),
    "dpo": ("val_reward_accuracy", "val_loss", "best_step", "steps", "train_seconds"),
}


def read_space(path: Path) -> dict[str, Any]:
    """The search-space YAML, checked whole before any trial starts: task, metric, base keys, every search
    entry, and a trial config built from every value each entry can take (so a bad value is named here,
    not found by a trial after others ran)."""
    space = read_yaml(path)
    unknown = [k for k in space if k not in SPACE_KEYS]
    if unknown:
        raise ConfigError(f"{path}: unknown key '{unknown[0]}' (known: {', '.join(SPACE_KEYS)})")
    if space.get("task") not in TASKS:
        raise ConfigError(f"{path}: 'task' must be one of {', '.join(TASKS)}; got {space.get('task')!r}")
    task = space["task"]
    base, search = space.get("base") or {}, space.get("search") or {}
    if not isinstance(base, dict) or not isinstance(search, dict) or not search:
        raise ConfigError(f"{path}: 'base' must be a mapping and 'search' a non-empty mapping")
    fields = TASKS[task].__dataclass_fields__
    for key in base:
        if str(key).replace("-", "_") not in fields:
            raise ConfigError(f"{path}: base key '{key}' is not a {task} config key")
    for key in search:
        if key not in fields:
            raise ConfigError(f"{path}: search key '{key}' is not a {task} config key")
    search = {key: read_entry(path, key, spec) for key, spec in search.items()}
    check_trial_configs(path, TASKS[task], base, search)
    metric = space.get("metric", "val_loss")
    if metric not in METRICS[task]:
        raise ConfigError(f"{path}: 'metric' must be one of the {task} runs' metrics: {', '.join(METRICS[task])}; "
                          f"got {metric!r}")
    direction = space.get("direction", "minimize" if metric.endswith("loss") else "maximize")
    if direction not in ("minimize", "maximize"):
        raise ConfigError(f"{path}: 'direction' must be minimize or maximize; got {direction!r}")
    return {**space, "base": base, "search": search, "metric": metric, "direction": direction}


def read_entry(path: Path, key: str, spec: Any) -> dict[str, Any]:
    """One search entry, checked and normalised: {choices: [...]} or {low, high, log, step} with numeric
    bounds (ints when both bounds are ints, log or not: `lora_r: {low: 4, high: 64, log: true}` must draw
    ints, as the config takes no 4.7; YAML's `1e-5`, a string, is read as the number it means). Optuna would
    only refuse a bad one inside a trial, with a traceback."""
    where = f"{path}: search '{key}'"
    if not isinstance(spec, dict) or not ("choices" in spec or {"low", "high"} <= set(spec)):
        raise ConfigError(f"{where} needs {{choices: [...]}} or {{low: X, high: Y}}")
    if "choices" in spec:
        if set(spec) != {"choices"}:
            raise ConfigError(f"{where}: give either choices or low/high (with log, step), not both")
        if not isinstance(spec["choices"], list) or not spec["choices"]:
            raise ConfigError(f"{where}: choices must be a non-empty list; got {spec['choices']!r}")
        return {"choices": spec["choices"]}
    if extra := sorted(set(spec) - {"low", "high", "log", "step"}):
        raise ConfigError(f"{where}: unknown field '{extra[0]}' (known: low, high, log, step)")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false; got {log!r}")
    low, high = (range_number(where, name, spec[name]) for name in ("low", "high"))
    integer = isinstance(low, int) and isinstance(high, int)
    if not integer:
        low, high = float(low), float(high)
    if low > high:
        raise ConfigError(f"{where}: low ({low}) must be <= high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0; got low {low}")
    entry = {"low": low, "high": high, "log": log}
    if "step" in spec:
        step = range_number(where, "step", spec["step"])
        if log:
            raise ConfigError(f"{where}: step cannot go with log: true (a log range is continuous)")
        if step <= 0 or (integer and not isinstance(step, int)):
            raise ConfigError(f"{where}: step must be {'an integer >= 1' if integer else 'a number > 0'}; "
                              f"got {spec['step']!r}")
        if step > high - low and not math.isclose(step, high - low):  # Optuna would warn and try low alone
            raise ConfigError(f"{where}: step {step} is larger than the range high - low = {high - low}; "
                              "give a smaller step")
        entry["step"] = step
    return entry


def range_number(where: str, name: str, value: Any) -> int | float:
    """A bound or step as a finite int or float (a numeric string such as YAML's `1e-5` is read as a float)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        number = float(value) if isinstance(value, float | str) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(f"{where}: {name} must be a finite number; got {value!r}")
    return number


def candidate_values(entry: dict[str, Any]) -> list[Any]:
    """The values of an entry a trial config must accept: every choice, or both ends of the range."""
    return list(entry["choices"]) if "choices" in entry else [entry["low"], entry["high"]]


def check_trial_configs(path: Path, config_cls: type, base: dict[str, Any], search: dict[str, Any]) -> None:
    """Build the trial config with each value of each entry (the others at their first value), so that a
    value the config refuses (`batch_size: {choices: [0, 8]}`) is named now rather than failing a trial."""
    first = {key: candidate_values(entry)[0] for key, entry in search.items()}
    for key, entry in search.items():
        for value in candidate_values(entry):
            try:
                from_dict(config_cls, {**base, **first, key: value, "out": "trial"})
            except ConfigError as e:
                raise ConfigError(f"{path}: base with search '{key}' = {value!r}: {e}") from None
    try:  # a base setting whose `needs` neither the base nor the search can meet would be moot in every trial
        cfg = from_dict(config_cls, {**base, **first, "out": "trial"})
        moot_somewhere = {f.name for f in dataclasses.fields(cfg) if (f.metadata.get("needs") or ("",))[0] in search}
        check_needs(cfg, given_keys(cfg, base, search) - moot_somewhere)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def suggest(trial: Any, search: dict[str, Any]) -> dict[str, Any]:
    """One trial's values of the (normalised, see `read_entry`) search entries."""
    params = {}
    for key, spec in search.items():
        if "choices" in spec:
            params[key] = trial.suggest_categorical(key, spec["choices"])
        elif isinstance(spec["low"], int):
            params[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1), log=spec["log"])
        else:
            params[key] = trial.suggest_float(key, spec["low"], spec["high"], log=spec["log"],
                                              step=spec.get("step"))
    return params


def make_pruner(spec: Any) -> Any:
    import optuna

    if spec in (None, "median"):
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if spec == "none":
        return optuna.pruners.NopPruner()
    if isinstance(spec, dict) and spec and set(spec) <= {"upper", "lower"}:
        bounds = {k: range_number("pruner", k, v) for k, v in spec.items()}
        return optuna.pruners.ThresholdPruner(**{k: float(v) for k, v in bounds.items()})
    raise ConfigError(f"pruner must be median, none or {{upper: X}} / {{lower: X}}; got {spec!r}")


def new_val_scores(path: Path, seen: int, metric: str, maximize: bool) -> tuple[list[tuple[int, float]], int]:
    """(step, intermediate score) of the val records of metrics.jsonl after the first `seen` lines, and
    the new line count. The score is `metric` (without its val_ prefix) if logged, else the signed loss."""
    if not path.is_file():
        return [], seen
    complete, _ = whole_lines(path.read_bytes())  # one read: a line the engine is still writing waits
    found = []
    for line in complete[seen:]:
        record = json.loads(line)
        if record.get("kind") == "val":
            key = metric.removeprefix("val_")
            value = record[key] if key in record else (-record["loss"] if maximize else record["loss"])
            found.append((record["step"], value))
    return found, len(complete)


def ran_into_nan(metrics_path: Path) -> bool:
    """True if the trial's last logged training record is NaN/inf: the engine stopped it as diverged."""
    train = [r for r in read_metrics(metrics_path) if r.get("kind") == "train"]
    return bool(train) and diverged(train[-1])


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
    if proc.returncode != 0 and ran_into_nan(metrics_path):
        return {metric: math.nan}  # the engine stopped a diverged run: these hyper-parameters, not the setup
    if proc.returncode != 0 or not manifest.is_file():
        log_path = folder.parent / f"{folder.name}.log"
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
        raise GenforgeError(f"trial {trial.number} failed: {tail[0] if tail else 'no output'} (log: {log_path})")
    return json.loads(manifest.read_text())["metrics"]


def tune(cfg: TuneConfig) -> dict[str, Any]:
    """Run `cfg.trials` more trials of the study; write best.yaml, trials.png, manifest; return the best."""
    import optuna

    space = read_space(cfg.space)
    out = Path(cfg.out or space.get("out") or "")
    if not str(out) or str(out) == ".":
        raise ConfigError("give the study folder: --out DIR (or `out:` in the YAML)")
    task, config_cls, maximize = space["task"], TASKS[space["task"]], space["direction"] == "maximize"
    pruner = make_pruner(space.get("pruner"))
    check_output(out, "tune")
    out.mkdir(parents=True, exist_ok=True)
    study = open_study(out, cfg, space["direction"], pruner)
    started = begin_output(out, "tune")  # only now, with the study read: a damaged one leaves the last summary

    def objective(trial: Any) -> float:
        values = {**space["base"], **suggest(trial, space["search"]), "out": out / "trials" / f"{trial.number:04d}"}
        trial_cfg = without_moot(from_dict(config_cls, values))
        metrics = run_trial(task, trial_cfg, trial, space["metric"], maximize)
        if metrics.get(space["metric"]) is None:
            raise ConfigError(f"trial runs report no metric '{space['metric']}' (they have: {', '.join(metrics)})")
        return float(metrics[space["metric"]])

    try:
        run_trials(study, objective, cfg.trials)
        interrupted = False
    except KeyboardInterrupt:  # Ctrl-C: the trials finished so far are summarised all the same
        interrupted = True
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    again = f"rerun `genforge tune {cfg.space} --out {out}` to add trials to the study"
    if not complete and interrupted:
        raise Stopped(f"stopped by Ctrl-C before a trial finished; {again}", signal.SIGINT)
    if not complete:
        raise GenforgeError(f"no trial of study {out} finished; see the trial logs in {out / 'trials'}")
    best = study.best_trial
    best_cfg = without_moot(from_dict(config_cls, {**space["base"], **best.params, "out": out / "best"}))
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
    if interrupted:
        raise Stopped(f"stopped by Ctrl-C: the running trial is marked failed; best.yaml and best.json hold the "
                      f"best of the {len(complete)} finished trials; {again}", signal.SIGINT)
    return summary


def open_study(out: Path, cfg: TuneConfig, direction: str, pruner: Any) -> Any:
    """The study in out/study.db, new or resumed (trials a killed tuner left running are marked failed); a
    damaged database is one ArtifactError rather than SQLAlchemy's multi-line one."""
    import optuna
    import sqlalchemy.exc

    db = out.resolve() / "study.db"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(study_name=cfg.study_name, storage=f"sqlite:///{db}", load_if_exists=True,
                                    direction=direction, pruner=pruner,
                                    sampler=optuna.samplers.TPESampler(seed=cfg.seed + len_trials(db, cfg)))
        for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(stale.number, state=optuna.trial.TrialState.FAIL)
    except sqlalchemy.exc.DatabaseError as e:
        reason = str(getattr(e, "orig", None) or e).splitlines()[0]
        raise ArtifactError(f"the study database {db} is damaged ({reason}); remove it or choose another "
                            "--out") from None
    return study


def run_trials(study: Any, objective: Any, n: int) -> None:
    """`n` trials by ask and tell rather than `study.optimize`, which logs a failing trial's traceback.

    A trial that raises is marked failed and ends the study with its one-line reason: the space was checked
    up front and a run the engine stops as diverged scores NaN (`run_trial`), so a trial raises for a reason
    of the setup (a seq_len the model cannot take, a missing file) that every later trial would repeat. A NaN
    score (those diverged hyper-parameters) fails that trial only.
    """
    import optuna

    for _ in range(n):
        trial = study.ask()
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        except BaseException:  # Ctrl-C too: the trial is failed, not left "running"
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        if math.isnan(value):  # a diverged run: that trial failed, the study goes on
            print(f"trial {trial.number} scored NaN (diverged): marked failed", file=sys.stderr)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)


def len_trials(db: Path, cfg: TuneConfig) -> int:
    """Trials already in the study: a resumed study's sampler gets a fresh seed, not the first run's again."""
    import optuna

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
