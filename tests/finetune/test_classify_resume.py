"""`finetune classify --resume` after a kill while it makes attacked copies, while its teacher labels or while it
trains: what was finished is reused, not redone, and the run ends as an uninterrupted one."""

import json
import os
import re
import signal

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from genforge.adversarial import augment
from genforge.cli import app
from genforge.errors import ArtifactError, ConfigError
from genforge.finetune import classifier, prepared
from genforge.finetune.batches import ShuffledBatches
from genforge.finetune.classify import classify
from genforge.finetune.config import ClassifyConfig
from genforge.finetune.data import read_labelled
from genforge.train.engine import Interrupted, checkpoint_exists

RECIPES = ["charswap", "invisible"]


def tiny_cfg(**overrides) -> ClassifyConfig:
    values = dict(max_steps=4, batch_size=8, seq_len=32, lr=3e-3, warmup_steps=1, eval_every=2, log_every=1,
                  bf16=False)
    return ClassifyConfig(**values | overrides)


@pytest.fixture
def jobs(counted):
    """Counts copy jobs; `jobs.stop_at = n` interrupts job n."""
    return counted(augment, "make_copy")


@pytest.fixture
def loads(counted):
    """Counts classifiers loaded (the augment model, teachers)."""
    return counted(classifier, "load_classifier")


def same_run(a, b) -> None:
    """Two finished runs with the same weights, validation report and copies."""
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], rtol=0, atol=1e-6), f"{key} differs by {(wa[key] - wb[key]).abs().max()}"
    assert json.loads((a / "logs" / "val_report.json").read_text()) == json.loads((b / "logs" / "val_report.json").read_text())
    assert (a / prepared.AUGMENTED).read_bytes() == (b / prepared.AUGMENTED).read_bytes()
    ma, mb = (json.loads((run / "manifest.json").read_text())["metrics"] | {"train_seconds": 0} for run in (a, b))
    assert ma == mb


def test_a_run_killed_while_making_copies_goes_on_where_it_stopped(tmp_path, bert_dir, classifier_dir,
                                                                    sentiment_csv, jobs, loads):
    common = dict(model=bert_dir, data=sentiment_csv, augment_attack=RECIPES, augment_ratio=0.5,
                  augment_model=classifier_dir, augment_random_ratio=0.5)
    straight = classify(tiny_cfg(out=tmp_path / "a", **common))
    total = jobs.count
    assert total > 60 and loads.count == 1  # both recipes' jobs, the attacked model loaded once

    run = tmp_path / "b"
    jobs.count, jobs.stop_at = 0, total // 2 + 5  # a kill in the second recipe's jobs
    with pytest.raises(KeyboardInterrupt):
        classify(tiny_cfg(out=run, **common))
    partial = run / prepared.PARTIAL
    done = total // 2 + 4
    assert len(partial.read_text().splitlines()) == done
    assert not checkpoint_exists(run) and not (run / "manifest.json").exists()

    # a plain rerun, or a resume with other settings, is refused and leaves the folder as it was
    with pytest.raises(ArtifactError, match="holds an unfinished run: add --resume to continue it"):
        classify(tiny_cfg(out=run, **common))
    with pytest.raises(ConfigError, match=r"^--resume: seed 7 differs from the interrupted run's 1337; resume with the "
                                          r"same settings or choose another --out$"):
        classify(tiny_cfg(out=run, resume=True, seed=7, **common))
    result = CliRunner().invoke(app, ["finetune", "classify", "--model", str(bert_dir), "--data", str(sentiment_csv),
                                      "--out", str(run), "--resume", "--augment-attack", "charswap",
                                      "--augment-attack", "invisible", "--augment-ratio", "1.0", "--augment-model",
                                      str(classifier_dir), "--augment-random-ratio", "0.5"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == ["error: --resume: augment_ratio 1.0 differs from the interrupted "
                                                  "run's 0.5; resume with the same settings or choose another --out"]
    assert len(partial.read_text().splitlines()) == done

    with partial.open("a") as f:  # the kill cut the line it was writing
        f.write('{"attack": "invisible", "job": ')
    jobs.count, jobs.stop_at = 0, None
    resumed = classify(tiny_cfg(out=run, resume=True, **common))
    assert jobs.count == total - done  # the finished jobs are not done again
    assert not partial.exists()
    same_run(straight, resumed)


def test_a_run_killed_while_training_keeps_its_copies_and_teacher_logits(tmp_path, bert_dir, classifier_dir,
                                                                         sentiment_csv, jobs, loads, monkeypatch):
    common = dict(model=bert_dir, data=sentiment_csv, augment_attack=["charswap"], augment_ratio=0.5,
                  teacher=[classifier_dir], distill_weight=0.5, eval_every=0)  # exported: the last step's weights
    straight = classify(tiny_cfg(out=tmp_path / "a", **common))
    assert jobs.count == 28 and loads.count == 1

    real = ShuffledBatches.batch

    def signal_at_step_2(self, step, micro):
        if step == 2 and micro == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, step, micro)

    run = tmp_path / "b"
    with monkeypatch.context() as m:
        m.setattr(ShuffledBatches, "batch", signal_at_step_2)
        with pytest.raises(Interrupted, match="SIGTERM at step 3"):
            classify(tiny_cfg(out=run, **common))
    assert (run / prepared.TEACHER).is_file() and (run / prepared.AUGMENTED).is_file()

    jobs.count, loads.count = 0, 0
    resumed = classify(tiny_cfg(out=run, resume=True, **common))
    assert jobs.count == 0 and loads.count == 0  # no copy made, no teacher run again
    same_run(straight, resumed)

    # a resume of the finished run with another teacher is refused before the folder is touched
    with pytest.raises(ConfigError, match=rf"--resume: --teacher {re.escape(str(straight))} is not the interrupted run's"):
        classify(tiny_cfg(out=run, resume=True, **common | {"teacher": [straight]}))
    assert (run / "manifest.json").is_file()


def test_a_kill_while_the_teacher_labels_keeps_the_copies(tmp_path, bert_dir, classifier_dir, sentiment_csv, jobs,
                                                          monkeypatch):
    common = dict(model=bert_dir, data=sentiment_csv, augment_attack=["charswap"], augment_ratio=0.5,
                  teacher=[classifier_dir], max_steps=2)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(classifier, "predict_probs", killed)
        with pytest.raises(KeyboardInterrupt):
            classify(tiny_cfg(out=tmp_path / "run", **common))
    assert jobs.count == 28 and not (tmp_path / "run" / prepared.TEACHER).exists()
    jobs.count = 0
    classify(tiny_cfg(out=tmp_path / "run", resume=True, **common))
    assert jobs.count == 0 and (tmp_path / "run" / prepared.TEACHER).is_file()


def test_progress_file_lines(tmp_path, bert_dir, sentiment_csv, jobs, monkeypatch):
    """augment_examples with a progress file: a resumed bar starts at the jobs done; a torn last line is redone,
    a damaged earlier one is an error naming the file and line."""
    examples = read_labelled(sentiment_csv, "text", "label")
    cfg = tiny_cfg(model=bert_dir, data=sentiment_csv, out=tmp_path, augment_attack=["charswap"], augment_ratio=0.5)
    expected = augment.augment_examples(examples, cfg)
    progress = tmp_path / "progress.jsonl"
    jobs.count, jobs.stop_at = 0, 11
    with pytest.raises(KeyboardInterrupt):
        augment.augment_examples(examples, cfg, progress=progress)
    lines = progress.read_text().splitlines()
    assert len(lines) == 10
    progress.write_text("\n".join(lines) + "\n" + lines[-1][:7])

    bars = []
    real_tqdm = augment.tqdm
    monkeypatch.setattr(augment, "tqdm", lambda **kw: bars.append(kw) or real_tqdm(**kw))
    jobs.count, jobs.stop_at = 0, None
    assert augment.augment_examples(examples, cfg, progress=progress) == expected
    assert jobs.count == 30 - 10 and bars[0]["initial"] == 10 and bars[0]["total"] == 30
    assert len(augment.finished_jobs(progress, ["charswap"], 30)["charswap"]) == 30  # the torn line was cut off

    progress.write_text("\n".join(lines[:3] + ['{"attack": "charswap", "job": 99, "copy": "x"}'] + lines[4:]) + "\n")
    with pytest.raises(ArtifactError, match=r"progress\.jsonl:4 is not a copy job of this run: delete the file"):
        augment.augment_examples(examples, cfg, progress=progress)


def test_a_resume_on_other_data_or_head_is_refused(tmp_path, bert_dir, sentiment_csv):
    """Without copies or teachers, a --resume on another --data (or head) continued the checkpoint silently."""
    common = dict(model=bert_dir, out=tmp_path / "run", eval_every=0)
    classify(tiny_cfg(data=sentiment_csv, max_steps=2, **common))
    (tmp_path / "run" / "manifest.json").unlink()  # as if killed after its checkpoint
    other = tmp_path / "other.csv"
    other.write_text(sentiment_csv.read_text() + "fresh gains 9,positive\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^--resume: --data .*other\.csv is not the interrupted run's"):
        classify(tiny_cfg(data=other, resume=True, **common))
    with pytest.raises(ConfigError, match=r"^--resume: head mean differs from the interrupted run's linear"):
        classify(tiny_cfg(data=sentiment_csv, resume=True, head="mean", **common))
    assert checkpoint_exists(tmp_path / "run")
    classify(tiny_cfg(data=sentiment_csv, resume=True, **common))
