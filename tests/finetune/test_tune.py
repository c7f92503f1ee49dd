import json
from pathlib import Path

import optuna
import pytest
import yaml

from genforge.config import from_dict, load_config
from genforge.errors import ConfigError, GenforgeError, Stopped
from genforge.finetune.config import ClassifyConfig, DpoConfig, TuneConfig
from genforge.finetune.tune import METRICS, new_val_scores, read_space, run_trials, suggest, tune


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
    trial = json.loads((tmp_path / "study" / "trials" / "0000" / "manifest.json").read_text())
    assert set(METRICS["classify"]) <= set(trial["metrics"])  # every metric a space may name is reported


def test_a_dpo_study_searches_beta_and_reports_reward_accuracy(tmp_path, llama_dir, jsonl):
    pairs = jsonl("pairs.jsonl", [{"prompt": f"where is order {i}?", "chosen": f"order {i} ships today.",
                                   "rejected": "no idea"} for i in range(24)])
    space = {"task": "dpo", "metric": "val_reward_accuracy", "pruner": "none",
             "base": {"model": str(llama_dir), "data": str(pairs), "max_steps": 3, "batch_size": 4, "seq_len": 48,
                      "lr": 2e-3, "warmup_steps": 1, "eval_every": 3, "bf16": False},
             "search": {"beta": {"choices": [0.1, 0.5]}}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    summary = tune(TuneConfig(space=tmp_path / "space.yaml", trials=1, out=tmp_path / "study"))
    assert summary["complete"] == 1 and summary["direction"] == "maximize"
    trial = json.loads((tmp_path / "study" / "trials" / "0000" / "manifest.json").read_text())
    assert set(METRICS["dpo"]) <= set(trial["metrics"]) and trial["stage"] == "finetune"
    assert load_config(DpoConfig, tmp_path / "study" / "best.yaml").beta == summary["best_params"]["beta"]


def test_diverged_dpo_trials_fail_alone(tmp_path, llama_dir, jsonl, capfd):
    """The engine stops a diverged run with an error; the tuner reads its NaN record and goes on."""
    pairs = jsonl("pairs.jsonl", [{"prompt": f"where is order {i}?", "chosen": f"order {i} ships today.",
                                   "rejected": "no idea"} for i in range(24)])
    space = {"task": "dpo", "pruner": "none",
             "base": {"model": str(llama_dir), "data": str(pairs), "max_steps": 2, "batch_size": 4, "seq_len": 48,
                      "warmup_steps": 0, "eval_every": 0, "log_every": 1, "bf16": False},
             "search": {"beta": {"choices": [1e300]}}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    with pytest.raises(GenforgeError, match="no trial of study .* finished"):
        tune(TuneConfig(space=tmp_path / "space.yaml", trials=2, out=tmp_path / "study"))
    study = optuna.load_study(study_name="genforge", storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    err = capfd.readouterr().err
    assert "trial 0 scored NaN (diverged)" in err and "trial 1 scored NaN (diverged)" in err
    assert "training diverged at step 1" in (tmp_path / "study" / "trials" / "0000.log").read_text()


def test_a_damaged_study_database_is_one_line_and_leaves_the_folder(tmp_path, bert_dir, sentiment_csv):
    space = write_space(tmp_path, bert_dir, sentiment_csv)
    study = tmp_path / "study"
    study.mkdir()
    (study / "study.db").write_bytes(b"garbage")
    (study / "manifest.json").write_text('{"stage": "tune"}')
    with pytest.raises(GenforgeError, match=r"^the study database .*study.db is damaged \(file is not a database\); "
                                            r"remove it or choose another --out$"):
        tune(TuneConfig(space=space, trials=1, out=study))
    assert (study / "manifest.json").is_file() and not (study / "trials").exists()


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


@pytest.mark.parametrize(("entry", "message"), [
    ({"lr": {"low": 1e-2, "high": 1e-4}}, r"search 'lr': low \(0.01\) must be <= high"),
    ({"lr": {"low": 0, "high": 1e-2, "log": True}}, "a log range needs low > 0"),
    ({"lr": {"choices": []}}, "choices must be a non-empty list"),
    ({"lr": {"low": 0.0, "high": 1.0, "step": 0}}, "step must be a number > 0"),
    ({"warmup_steps": {"low": 0, "high": 10, "step": 0}}, "step must be an integer >= 1"),
    ({"lr": {"low": 1e-5, "high": 1e-3, "log": True, "step": 1e-4}}, "step cannot go with log"),
    ({"lr": {"low": "abc", "high": 1}}, "low must be a finite number; got 'abc'"),
    ({"lr": {"low": 0, "high": 1, "lgo": True}}, "unknown field 'lgo'"),
    ({"lr": {"low": 1e-5, "high": 1e-3, "step": 1}}, "step 1 is larger than the range high - low = 0.00099"),
    ({"warmup_steps": {"low": 0, "high": 10, "step": 11}}, "step 11 is larger than the range high - low = 10"),
    ({"batch_size": {"choices": [0, 8]}}, "search 'batch_size' = 0: --batch-size must be positive"),
])
def test_bad_search_entries_are_named_before_any_trial(tmp_path, entry, message):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"task": "classify", "base": {"model": "m", "data": "d"}, "search": entry}))
    with pytest.raises(ConfigError, match=message):
        read_space(path)


def test_bad_base_key_metric_and_pruner_are_named_before_any_trial(tmp_path):
    path = tmp_path / "s.yaml"
    search = {"lr": {"low": "1e-5", "high": "1e-3", "log": True}}  # YAML reads 1e-5 as a string: still a number
    for extra, message in [({"base": {"model": "m", "data": "d", "max_stepz": 2}}, "base key 'max_stepz' is not"),
                           ({"base": {"model": "m", "data": "d"}, "metric": "val_acc"}, "'metric' must be one of"),
                           ({"base": {"model": "m"}}, "give the training data")]:
        path.write_text(yaml.safe_dump({"task": "classify", "search": search, **extra}))
        with pytest.raises(ConfigError, match=message):
            read_space(path)
    path.write_text(yaml.safe_dump({"task": "classify", "base": {"model": "m", "data": "d"}, "search": search,
                                    "pruner": {"upper": "abc"}}))
    with pytest.raises(ConfigError, match="upper must be a finite number"):
        tune(TuneConfig(space=path, trials=1, out=tmp_path / "study"))
    assert not (tmp_path / "study").exists()  # refused before anything was written
    assert read_space(path)["search"]["lr"] == {"low": 1e-5, "high": 1e-3, "log": True}


def test_a_failing_trial_ends_the_study_in_one_line(capfd):
    study = optuna.create_study()

    def objective(trial):
        trial.suggest_float("lr", 0.0, 1.0)
        raise GenforgeError("trial 0 failed: error: --seq-len 999 is longer than the 256 positions")

    with pytest.raises(GenforgeError, match="seq-len 999"):
        run_trials(study, objective, 3)
    assert [t.state.name for t in study.trials] == ["FAIL"]  # stopped: not left running, no more trials
    assert "Traceback" not in capfd.readouterr().err


def test_a_diverged_trial_fails_alone(capfd):
    study = optuna.create_study()
    values = iter([float("nan"), 0.5])
    run_trials(study, lambda trial: trial.suggest_float("lr", 0.0, 1.0) * 0 + next(values), 2)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    err = capfd.readouterr().err
    assert "trial 0 scored NaN (diverged)" in err and "Warning" not in err


def test_a_log_range_over_an_int_key_draws_ints(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"task": "classify", "base": {"model": "m", "data": "d"},
                                    "search": {"lora_r": {"low": 4, "high": 64, "log": True}}}))
    search = read_space(path)["search"]
    assert search["lora_r"] == {"low": 4, "high": 64, "log": True}
    assert all(type(v) is int for v in search["lora_r"].values() if v is not True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        value = suggest(trial, search)["lora_r"]
        assert isinstance(value, int) and 4 <= value <= 64
        assert from_dict(ClassifyConfig, {"model": "m", "data": "d", "lora_r": value, "out": "t"}).lora_r == value
    assert study.trials[0].distributions["lora_r"] == optuna.distributions.IntDistribution(4, 64, log=True)


def test_a_line_the_engine_finishes_while_it_is_read_waits_for_the_next_poll(tmp_path, monkeypatch):
    """The engine may finish its last line at any moment: a poll must judge the text it parses, not a
    second read (which could end with the newline the first one lacked)."""
    path, first = tmp_path / "metrics.jsonl", '{"step": 2, "kind": "val", "loss": 0.5}\n'
    path.write_text(first + '{"step": 4, "kind": "va')

    def then_the_engine_finishes(read):
        def wrapped(self, *args, **kwargs):
            data = read(self, *args, **kwargs)
            if self == path:
                with open(path, "w") as f:
                    f.write(first + '{"step": 4, "kind": "val", "loss": 0.4}\n')
            return data
        return wrapped

    for name in ("read_text", "read_bytes"):
        monkeypatch.setattr(Path, name, then_the_engine_finishes(getattr(Path, name)))
    assert new_val_scores(path, 0, "val_loss", maximize=False) == ([(2, 0.5)], 1)
    assert new_val_scores(path, 1, "val_loss", maximize=False) == ([(4, 0.4)], 2)


def test_ctrl_c_summarises_the_finished_trials(tmp_path, monkeypatch):
    """Ctrl-C during a trial wrote no best.yaml (the finished trials were summarised only after one more trial)
    and said "rerun with --resume", a flag tune does not have."""
    from genforge.finetune import tune as tune_module

    outcomes = iter([{"val_accuracy": 0.75}, KeyboardInterrupt()])

    def trial_then_ctrl_c(task, cfg, trial, metric, maximize):
        outcome = next(outcomes)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr(tune_module, "run_trial", trial_then_ctrl_c)
    space, out = write_space(tmp_path, "m", "d.csv", pruner="none"), tmp_path / "study"
    with pytest.raises(Stopped, match=r"^stopped by Ctrl-C: .* best of the 1 finished trials; rerun `genforge tune "
                                      r".*space\.yaml --out .*study` to add trials to the study$") as stopped:
        tune(TuneConfig(space=space, trials=5, out=out))
    assert stopped.value.exit_code == 130
    summary = json.loads((out / "best.json").read_text())
    assert summary["best_value"] == 0.75 and summary["complete"] == 1 and summary["failed"] == 1
    assert (out / "best.yaml").is_file()


def test_a_base_setting_no_trial_can_use_is_refused_and_a_searched_switch_lets_it_through(tmp_path):
    """`lora_alpha` in the base with no `lora_r` anywhere would be moot in every trial: named before any
    trial. Searching `lora_r` (0 included) makes it a setting some trials use."""
    path = tmp_path / "s.yaml"
    base = {"model": "m", "data": "d", "lora_alpha": 32.0}
    path.write_text(yaml.safe_dump({"task": "classify", "base": base, "search": {"lr": {"choices": [1e-3]}}}))
    with pytest.raises(ConfigError, match="--lora-alpha has no effect without --lora-r"):
        read_space(path)
    path.write_text(yaml.safe_dump({"task": "classify", "base": base, "search": {"lora_r": {"choices": [0, 8]}}}))
    assert read_space(path)["base"]["lora_alpha"] == 32.0
