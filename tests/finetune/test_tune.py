import json

import optuna
import pytest
import yaml

from genforge.config import load_config
from genforge.errors import ConfigError
from genforge.finetune.config import ClassifyConfig, TuneConfig
from genforge.finetune.tune import read_space, tune


def write_space(tmp_path, bert_dir, data, **extra):
    space = {"task": "classify", "metric": "val_accuracy",
             "base": {"model": str(bert_dir), "data": str(data), "max_steps": 4, "batch_size": 8, "seq_len": 24,
                      "warmup_steps": 1, "eval_every": 2, "log_every": 1, "bf16": False},
             "search": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "head": {"choices": ["linear", "lstm"]}},
             **extra}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def test_study_resumes_and_writes_the_best_config(tmp_path, bert_dir, sentiment_csv):
    space = write_space(tmp_path, bert_dir, sentiment_csv, pruner="none")
    first = tune(TuneConfig(space=space, trials=1, out=tmp_path / "study"))
    assert first["trials"] == 1 and first["complete"] == 1 and first["direction"] == "maximize"
    study = optuna.load_study(study_name="genforge", storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    study.ask()  # a trial a killed tuner left running
    again = tune(TuneConfig(space=space, trials=1, out=tmp_path / "study"))  # the same SQLite study, one more
    assert again["trials"] == 3 and again["complete"] == 2 and again["failed"] == 1
    assert {p.name for p in (tmp_path / "study" / "trials").iterdir() if p.is_dir()} == {"0000", "0002"}
    best = load_config(ClassifyConfig, tmp_path / "study" / "best.yaml")
    assert best.head == again["best_params"]["head"] and best.lr == pytest.approx(again["best_params"]["lr"])
    assert (tmp_path / "study" / "trials.png").stat().st_size > 0
    assert json.loads((tmp_path / "study" / "manifest.json").read_text())["stage"] == "tune"


def test_pruned_trials_are_stopped(tmp_path, bert_dir, sentiment_csv):
    space = write_space(tmp_path, bert_dir, sentiment_csv, metric="val_loss", pruner={"upper": 0.0},
                        base={"model": str(bert_dir), "data": str(sentiment_csv), "max_steps": 400, "batch_size": 8,
                              "seq_len": 24, "eval_every": 1, "bf16": False})
    with pytest.raises(Exception, match="no trial of study"):
        tune(TuneConfig(space=space, trials=1, out=tmp_path / "study"))
    study = optuna.load_study(study_name="genforge", storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["PRUNED"]
    checkpoint = json.loads((tmp_path / "study" / "trials" / "0000" / "checkpoints" / "latest" / "checkpoint.json")
                            .read_text())
    assert checkpoint["step"] < 400  # stopped by SIGTERM long before max_steps, with a checkpoint


def test_bad_spaces(tmp_path, bert_dir, sentiment_csv):
    path = tmp_path / "s.yaml"
    for content, message in [({"task": "gan", "search": {"lr": {"low": 1, "high": 2}}}, "'task' must be one of"),
                             ({"task": "classify", "search": {"lrr": {"low": 1, "high": 2}}}, "'lrr' is not a classify"),
                             ({"task": "classify", "search": {"lr": {"low": 1}}}, "needs {choices"),
                             ({"task": "classify", "search": {}}, "non-empty"),
                             ({"task": "classify", "serch": {}}, "unknown key 'serch'")]:
        path.write_text(yaml.safe_dump(content))
        with pytest.raises(ConfigError, match=message):
            read_space(path)
