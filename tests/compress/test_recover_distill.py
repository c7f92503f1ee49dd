"""Recovery after pruning as a student of the unpruned original (Minitron; the default, `--no-recover-distill` for plain
fine-tuning)."""

import copy
import json

import pytest
import torch
from typer.testing import CliRunner

from genforge.cli import app
from genforge.compress.config import CompressConfig
from genforge.compress.distill import DistillObjective, DistillStudent
from genforge.compress.run import compress
from genforge.compress.subject import load_subject
from genforge.compress.task import lm_score, task_for
from genforge.models.load import load_model
from genforge.train.objectives import ClmObjective


def test_structured_run_with_distilled_recovery(tmp_path, lm_dir, packed, settings, monkeypatch):
    seen = []  # (teacher's FFN width, student's, alpha, temperature) of every training loss
    loss = DistillObjective.loss

    def spy(self, model, batch):
        seen.append((self.teacher.config.intermediate_size, model.student.config.intermediate_size, self.alpha,
                     self.temperature, self.teacher.training, next(self.teacher.parameters()).requires_grad))
        return loss(self, model, batch)

    monkeypatch.setattr(DistillObjective, "loss", spy)
    cfg = CompressConfig(model=lm_dir, method="prune-structured", ffn_fraction=0.5, data=packed, eval_data=packed,
                         recover_distill=True, alpha=0.7, temperature=3.0, max_steps=4, eval_every=2, lr=1e-3,
                         out=tmp_path / "r", **settings)
    out = compress(cfg)
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["recover_distill"] == {"alpha": 0.7, "temperature": 3.0}
    assert report["settings"]["recovery"]["steps"] == 4
    width, pruned = (json.loads((d / "config.json").read_text())["intermediate_size"] for d in (lm_dir, out))
    assert len(seen) == 4 * cfg.grad_accum  # every micro-batch, and only training: validation is not distilled
    assert pruned < width and set(seen) == {(width, pruned, 0.7, 3.0, False, False)}  # the frozen original teaches
    assert json.loads((out / "manifest.json").read_text())["config"]["recover_distill"] is True
    model, objective = load_model(out)
    assert objective == "clm" and model.config.intermediate_size == pruned
    # checkpoints were selected on the plain task loss of the validation windows, not on the mixed loss
    best = report["settings"]["recovery"]["best"]["loss"]
    assert lm_score(model, task_for(cfg, load_subject(out), packed))["loss"] == pytest.approx(best, rel=1e-4)


def test_recovery_distils_by_default_and_plain_recovery_records_no_distillation(tmp_path, lm_dir, packed, settings):
    assert CompressConfig(model=lm_dir, method="prune", out=tmp_path / "x").recover_distill
    for name, extra in (("plain", {"recover_distill": False}), ("none", {"recover": False}), ("no-data", {})):
        data = None if name == "no-data" else packed
        out = compress(CompressConfig(model=lm_dir, method="prune", sparsity=0.3, data=data, max_steps=1,
                                      eval_every=0, out=tmp_path / name, **settings, **extra))
        assert json.loads((out / "report.json").read_text())["settings"]["recover_distill"] is None, name


def test_the_kd_term_of_a_student_equal_to_its_teacher_is_zero_with_zero_gradient(lm_dir):
    """KL(t || s) has gradient softmax(s/T) - softmax(t/T) in the student's logits: zero at s == t. With alpha=1 the
    loss and every gradient vanish; with alpha=0.5 the gradient is exactly half the task loss's."""
    teacher, _ = load_model(lm_dir)
    teacher.requires_grad_(False)
    ids = torch.randint(6, 320, (2, 12), generator=torch.Generator().manual_seed(0))
    labels = ids[:, 1:].clone()
    labels[0, :3] = -100  # padding-like positions: not predicted, not counted
    batch = {"input_ids": ids[:, :-1], "labels": labels}

    def grads(alpha: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
        student = DistillStudent(copy.deepcopy(teacher).requires_grad_(True))
        objective = DistillObjective(teacher, "clm", temperature=2.0, alpha=alpha)
        assert objective.count(batch) == 19
        loss, metrics = objective.loss(student, batch)
        assert metrics["tokens"] == 19
        loss.backward()
        return loss, [p.grad for p in student.parameters()]

    loss, kd = grads(1.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert max(g.abs().max().item() for g in kd) < 1e-6
    _, mixed = grads(0.5)
    plain = copy.deepcopy(teacher).requires_grad_(True)
    ClmObjective().loss(plain, batch)[0].backward()
    for m, p in zip(mixed, plain.parameters(), strict=True):
        torch.testing.assert_close(m, 0.5 * p.grad, atol=1e-6, rtol=1e-4)
    assert any(p.grad.abs().max() > 1e-4 for p in plain.parameters())  # the comparison is not of zeros


@pytest.mark.parametrize("args,message", [
    (["--method", "prune", "--data", "d", "--hidden-weight", "1"], "--hidden-weight applies to --method distill"),
    (["--method", "int8", "--hidden-weight", "0.5"], "--hidden-weight applies to --method distill"),
])
def test_bad_recover_distill_input_is_one_line(tmp_path, args, message):
    result = CliRunner().invoke(app, ["compress", "--model", str(tmp_path / "missing"), "--out",
                                      str(tmp_path / "out"), *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output


def test_classifier_recovers_by_distillation_and_selects_on_macro_f1(tmp_path, classifier_dir, sentiment_csv,
                                                                        settings):
    out = compress(CompressConfig(model=classifier_dir, method="prune-structured", ffn_fraction=0.25,
                                  data=sentiment_csv, recover_distill=True, max_steps=2, eval_every=0,
                                  out=tmp_path / "c", **{**settings, "batch_size": 16}))
    recovery = json.loads((out / "report.json").read_text())["settings"]["recovery"]
    assert recovery["steps"] == 2 and "macro_f1" in recovery["best"]
