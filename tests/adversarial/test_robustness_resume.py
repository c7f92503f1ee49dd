"""`genforge robustness eval --resume`: an interrupted attack run goes on where it stopped and ends with the
report and adversarial texts an uninterrupted run gives; the folder rules match `finetune --resume`."""

import json

import pytest
from typer.testing import CliRunner

from genforge.adversarial import robustness
from genforge.adversarial.attacks import AttackResult
from genforge.adversarial.config import RobustnessConfig
from genforge.adversarial.progress import PROGRESS, Progress, partial_path, read_partial
from genforge.artifacts import MANIFEST, read_manifest
from genforge.cli import app
from genforge.config import load_config
from genforge.errors import ArtifactError, ConfigError

ATTACKS = ["charswap", "invisible"]
EXAMPLES = 10


def config(model, data, out, **overrides) -> RobustnessConfig:
    values = dict(model=model, data=data, out=out, attack=ATTACKS, max_examples=EXAMPLES, max_queries=20, seed=3)
    return load_config(RobustnessConfig, overrides=values | overrides)


@pytest.fixture
def calls(counted):
    """Counts attack_example calls; `calls.stop_at = n` interrupts call n."""
    return counted(robustness, "attack_example")


def without_seconds(report):
    return report | {"attacks": {k: {**a, "seconds": None} for k, a in report["attacks"].items()}}


def outputs(out):
    return {name: (out / f"adversarial_{name}.jsonl").read_text(encoding="utf-8") for name in ATTACKS}


def interrupt(cfg, calls, at):
    calls.count, calls.stop_at = 0, at
    with pytest.raises(KeyboardInterrupt):
        robustness.robustness_eval(cfg)
    calls.count, calls.stop_at = 0, None
    assert not (cfg.out / MANIFEST).exists() and (cfg.out / PROGRESS).is_file()


def test_interrupted_run_resumes_to_the_same_report(tmp_path, classifier_dir, sentiment_csv, calls):
    straight = robustness.robustness_eval(config(classifier_dir, sentiment_csv, tmp_path / "straight"))
    assert calls.count == 2 * EXAMPLES and not (tmp_path / "straight" / PROGRESS).exists()
    cfg = config(classifier_dir, sentiment_csv, tmp_path / "run")
    interrupt(cfg, calls, EXAMPLES + 5)  # charswap finished, invisible stopped in its 5th example
    assert (cfg.out / "adversarial_charswap.jsonl").is_file() and not partial_path(cfg.out, "charswap").exists()
    assert len(partial_path(cfg.out, "invisible").read_text(encoding="utf-8").splitlines()) == 4
    resumed = robustness.robustness_eval(config(classifier_dir, sentiment_csv, cfg.out, resume=True))
    assert calls.count == EXAMPLES - 4, "finished examples were attacked again"
    assert without_seconds(resumed) == without_seconds(straight)
    assert resumed["attacks"]["invisible"]["seconds"] > 0
    assert json.loads((cfg.out / "report.json").read_text()) == resumed
    assert outputs(cfg.out) == outputs(tmp_path / "straight")
    assert read_manifest(cfg.out, "robustness")["metrics"] == read_manifest(tmp_path / "straight")["metrics"]
    assert sorted(p.name for p in cfg.out.iterdir()) == sorted(p.name for p in (tmp_path / "straight").iterdir())


def test_a_torn_last_line_is_attacked_again_and_a_damaged_line_refused(tmp_path, classifier_dir, sentiment_csv,
                                                                      calls):
    straight = robustness.robustness_eval(config(classifier_dir, sentiment_csv, tmp_path / "straight"))
    cfg = config(classifier_dir, sentiment_csv, tmp_path / "run")
    interrupt(cfg, calls, 4)  # charswap stopped in its 4th example
    partial = partial_path(cfg.out, "charswap")
    lines = partial.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 3
    partial.write_text("".join(lines[:2]) + lines[2][:25], encoding="utf-8")  # killed while writing line 3
    resume = config(classifier_dir, sentiment_csv, cfg.out, resume=True)
    interrupt(resume, calls, 3)  # the torn line is dropped: examples 3 and 4 attacked, stopped in the 5th
    rows = [json.loads(line) | {"seconds": None} for line in partial.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 4 and rows[:3] == [json.loads(line) | {"seconds": None} for line in lines]
    resumed = robustness.robustness_eval(resume)
    assert calls.count == 2 * EXAMPLES - 4
    assert without_seconds(resumed) == without_seconds(straight)
    assert outputs(cfg.out) == outputs(tmp_path / "straight")

    interrupt(cfg, calls, 3)
    damaged = partial.read_text(encoding="utf-8").replace('"status"', '"state"', 1)
    partial.write_text(damaged, encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"charswap.partial.jsonl is corrupt \(line 1 is no attack result"):
        robustness.robustness_eval(resume)
    assert calls.count == 0


def test_resume_refuses_other_settings(tmp_path, classifier_dir, sentiment_csv, calls):
    cfg = config(classifier_dir, sentiment_csv, tmp_path / "run", seed=0)
    same = dict(resume=True, seed=0)
    interrupt(cfg, calls, 3)
    before = {p.name: p.read_bytes() for p in cfg.out.iterdir()}
    other_data = tmp_path / "other.csv"
    other_data.write_text(sentiment_csv.read_text(encoding="utf-8") + "profits rose again,positive\n", encoding="utf-8")
    cases = [
        (dict(seed=1), "--resume: seed 1 differs from the interrupted run's 0; resume with the same settings or "
                       "choose another --out"),
        (dict(attack=["charswap"]), "attack charswap differs from the interrupted run's charswap, invisible"),
        (dict(max_queries=25), "max_queries 25 differs from the interrupted run's 20"),
        (dict(data=other_data), f"the data {other_data} is not the interrupted run's"),
    ]
    for changes, message in cases:
        with pytest.raises(ConfigError) as e:
            robustness.robustness_eval(config(classifier_dir, changes.pop("data", sentiment_csv), cfg.out,
                                              **same | changes))
        assert message in str(e.value)
    assert calls.count == 0 and {p.name: p.read_bytes() for p in cfg.out.iterdir()} == before


def test_folder_rules(tmp_path, classifier_dir, sentiment_csv, calls):
    with pytest.raises(ArtifactError, match="nothing to resume: .*progress.json does not exist.*drop --resume"):
        robustness.robustness_eval(config(classifier_dir, sentiment_csv, tmp_path / "new", resume=True))
    cfg = config(classifier_dir, sentiment_csv, tmp_path / "run")
    interrupt(cfg, calls, 3)
    with pytest.raises(ArtifactError, match="holds an unfinished run: add --resume to continue it, or choose another"):
        robustness.robustness_eval(cfg)
    robustness.robustness_eval(config(classifier_dir, sentiment_csv, cfg.out, resume=True))
    assert not (cfg.out / PROGRESS).exists() and not list(cfg.out.glob("*.partial.jsonl"))
    with pytest.raises(ArtifactError, match="nothing to resume"):  # a finished run has nothing left to resume
        robustness.robustness_eval(config(classifier_dir, sentiment_csv, cfg.out, resume=True))
    # a new run redoes a finished folder from scratch, whatever progress a killed run left in it
    (cfg.out / PROGRESS).write_text("{}", encoding="utf-8")
    partial_path(cfg.out, "charswap").write_text("not json\n", encoding="utf-8")
    calls.count = 0
    robustness.robustness_eval(cfg)
    assert calls.count == 2 * EXAMPLES and not (cfg.out / PROGRESS).exists()
    assert not partial_path(cfg.out, "charswap").exists() and read_manifest(cfg.out, "robustness")


def test_cli_errors_are_one_line_and_leave_a_finished_folder_whole(tmp_path, classifier_dir, sentiment_csv):
    out = tmp_path / "run"
    args = ["robustness", "eval", "--model", classifier_dir, "--data", sentiment_csv, "--out", out,
            "--attack", "charswap", "--max-examples", 4, "--max-queries", 10]
    assert CliRunner().invoke(app, [str(a) for a in args]).exit_code == 0
    manifest = (out / MANIFEST).read_text(encoding="utf-8")
    result = CliRunner().invoke(app, [str(a) for a in [*args, "--resume"]])
    assert result.exit_code == 2, result.output
    assert "nothing to resume" in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert (out / MANIFEST).read_text(encoding="utf-8") == manifest


def test_partial_lines_keep_texts_with_unicode_line_breaks(tmp_path):
    texts = ["profits\u2028rose", "sales\x85fell", "利润\u2029大涨\r"]
    results = [AttackResult(t, 1, t + "!", 0, "succeeded", 3, 2, 1, 1) for t in texts]
    with Progress(tmp_path, {}).appending("charswap") as add:
        for r in results:
            add(r, 0.5)
    partial = read_partial(partial_path(tmp_path, "charswap"), [(t, 1) for t in texts])
    assert partial.results == results and partial.seconds == 1.5


def test_an_unfinished_classifier_run_is_refused(tmp_path, classifier_dir, sentiment_csv):
    """A classifier run killed before its end (checkpoints/, no manifest) held an earlier run's or half-copied
    weights: attacking them made a report about a model that does not exist."""
    import shutil

    killed = shutil.copytree(classifier_dir, tmp_path / "killed")
    (killed / MANIFEST).unlink()
    (killed / "checkpoints").mkdir(exist_ok=True)
    with pytest.raises(ArtifactError, match="is an unfinished genforge run"):
        robustness.robustness_eval(config(killed, sentiment_csv, tmp_path / "out"))
