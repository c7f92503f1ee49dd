import copy
import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from genforge.compress.config import CompressConfig
from genforge.compress.distill import DistillObjective, DistillStudent, evenly_spaced, fewer_layers, outputs
from genforge.compress.run import compress
from genforge.compress.subject import load_subject
from genforge.compress.vocab import trim_vocab
from genforge.errors import ConfigError
from genforge.finetune.classifier import load_classifier, predict_probs
from genforge.generate import generate
from genforge.models.load import load_model


def test_loss_is_alpha_kl_plus_task_and_kl_vanishes_for_the_teacher_itself(lm_dir):
    teacher, _ = load_model(lm_dir)
    ids = torch.randint(6, 320, (2, 12), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}
    same = DistillObjective(teacher, "clm", temperature=2.0, alpha=1.0)
    loss, metrics = same.loss(DistillStudent(copy.deepcopy(teacher)), batch)
    assert loss.item() == pytest.approx(0.0, abs=1e-5) and metrics["tokens"] == 22

    student = fewer_layers(teacher, [0])
    objective = DistillObjective(teacher, "clm", temperature=2.0, alpha=0.3)
    loss, _ = objective.loss(DistillStudent(student), batch)
    with torch.no_grad():
        s, t = student(**{"input_ids": batch["input_ids"]}).logits, teacher(input_ids=batch["input_ids"]).logits
    task = F.cross_entropy(s.flatten(0, 1), batch["labels"].flatten())
    kl = F.kl_div(F.log_softmax(s.flatten(0, 1) / 2, -1), F.log_softmax(t.flatten(0, 1) / 2, -1), log_target=True,
                  reduction="batchmean") * 4
    assert loss.item() == pytest.approx((0.3 * kl + 0.7 * task).item(), rel=1e-4)


def test_hidden_state_matching_is_zero_for_identical_states(lm_dir):
    teacher, _ = load_model(lm_dir)
    ids = torch.randint(6, 320, (1, 9))
    objective = DistillObjective(teacher, "clm", alpha=1.0, hidden_weight=1.0, layer_map=[(1, 1), (2, 2)])
    loss, _ = objective.loss(DistillStudent(copy.deepcopy(teacher)), {"input_ids": ids[:, :-1], "labels": ids[:, 1:]})
    assert loss.item() == pytest.approx(0.0, abs=1e-5)


def test_hidden_matching_compares_the_students_last_state_like_with_like(lm_dir):
    """HF's last Llama hidden state has the final RMSNorm applied: a student that is an exact copy of the
    teacher's layer 0 matches the teacher's (pre-norm) state 1 exactly once both are taken the same way."""
    teacher, _ = load_model(lm_dir)
    with torch.no_grad():
        teacher.model.norm.weight.uniform_(0.2, 3.0)  # trained gains are not all 1 (a uniform gain keeps cosines)
    student = fewer_layers(teacher, [0])
    objective = DistillObjective(teacher, "clm", hidden_weight=1.0, layer_map=[(1, 1)])
    ids = torch.randint(6, 320, (2, 9), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        _, s_hidden = outputs(student, batch, "clm", True)
        _, t_hidden = outputs(teacher, batch, "clm", True)
        loss = objective.hidden_loss(DistillStudent(student), s_hidden, t_hidden, batch["attention_mask"])
    assert loss.item() == pytest.approx(0.0, abs=1e-5)


def test_student_copies_evenly_spaced_teacher_layers(lm_dir):
    teacher, _ = load_model(lm_dir)
    assert evenly_spaced(6, 3) == [0, 2, 4] and evenly_spaced(12, 4) == [0, 3, 6, 9]
    student = fewer_layers(teacher, [1])
    assert student.config.num_hidden_layers == 1
    torch.testing.assert_close(student.model.layers[0].mlp.down_proj.weight, teacher.model.layers[1].mlp.down_proj.weight)


def test_lm_distillation_run(tmp_path, lm_dir, packed, settings):
    out = compress(CompressConfig(model=lm_dir, method="distill", data=packed, eval_data=packed, student_layers=1,
                                  hidden_weight=0.5, max_steps=6, eval_every=3, lr=1e-3, out=tmp_path / "d",
                                  **settings))
    report = json.loads((out / "report.json").read_text())
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    assert report["compressed"]["params"] < report["original"]["params"]
    assert math.isfinite(report["compressed"]["perplexity"]) and report["settings"]["layer_map"] == [[1, 1]]
    assert (out / "logs" / "metrics.jsonl").is_file()
    assert generate(out, "ROMEO:", max_new_tokens=6, temperature=0)[0]


def test_preset_student_with_projected_hidden_states(tmp_path, lm_dir, packed, settings):
    out = compress(CompressConfig(model=lm_dir, method="distill", data=packed, student_preset="custom",
                                  hidden_size=64, num_layers=1, num_heads=2, hidden_weight=1.0, max_steps=3,
                                  eval_every=0, out=tmp_path / "p", **settings))
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_size"] == 64 and config["num_hidden_layers"] == 1


def test_trimmed_vocabulary_tokenizes_training_texts_exactly_as_before(classifier_dir, sentiment_csv):
    subject = load_subject(classifier_dir)
    texts = [line.rsplit(",", 1)[0] for line in sentiment_csv.read_text().splitlines()[1:]]
    before = subject.tokenizer(texts)["input_ids"]
    old_vocab = len(subject.tokenizer)
    trimmed, old_ids = trim_vocab(subject, texts)
    after = trimmed.tokenizer(texts)["input_ids"]
    assert len(trimmed.tokenizer) < old_vocab and trimmed.transformer.config.vocab_size == len(old_ids)
    assert all(old_ids[torch.tensor(a)].tolist() == b for a, b in zip(after, before, strict=True))


def test_classifier_distillation_with_trimmed_vocab(tmp_path, classifier_dir, sentiment_csv, settings):
    out = compress(CompressConfig(model=classifier_dir, method="distill", data=sentiment_csv, eval_data=sentiment_csv,
                                  student_layers=2, trim_vocab=True, epochs=1.0, lr=1e-3, out=tmp_path / "c",
                                  **{**settings, "batch_size": 16}))
    report = json.loads((out / "report.json").read_text())
    assert report["compressed"]["params"] < 0.8 * report["original"]["params"]
    assert report["settings"]["vocab_size"] < json.loads((classifier_dir / "config.json").read_text())["vocab_size"]
    model, tokenizer, info = load_classifier(out)
    probs = predict_probs(model, tokenizer, ["profits rose sharply 2"], seq_len=info["seq_len"], multi_label=False)
    assert probs.shape == (1, 2) and abs(probs.sum() - 1) < 1e-5


def test_trim_vocab_refuses_byte_level_bpe(lm_dir):
    with pytest.raises(ConfigError, match="WordPiece"):
        trim_vocab(load_subject(lm_dir), ["some text"])


def test_masked_lm_distillation_and_head_pruning(tmp_path, mlm_dir, packed, settings):
    out = compress(CompressConfig(model=mlm_dir, method="distill", data=packed, student_layers=1, max_steps=2,
                                  eval_every=0, out=tmp_path / "d", **settings))
    model, objective = load_model(out)
    assert objective == "mlm" and model.config.num_hidden_layers == 1
    out = compress(CompressConfig(model=mlm_dir, method="prune-structured", heads_fraction=0.5, out=tmp_path / "h",
                                  eval_data=packed, **settings))
    model, _ = load_model(out)  # BERT with fewer heads and its tied decoder, through the resizing loader
    assert model.bert.encoder.layer[0].attention.self.query.out_features == 64
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


class TableBody(torch.nn.Module):
    """Class logits as a mean of per-token rows: runs on any device, meta included (HF models do not)."""

    def __init__(self, vocab: int = 16, classes: int = 2):
        super().__init__()
        self.table = torch.nn.Embedding(vocab, classes)

    def forward(self, input_ids, **_):
        return SimpleNamespace(logits=self.table(input_ids).mean(1))


class TableClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.head = TableBody(), None


def test_a_classifier_distillation_counts_examples_where_the_labels_are():
    """Evaluation stacks the count with the loss: both must be on the device. Meta tensors stand in for a GPU's
    (CPU and meta tensors do not stack, as CPU and CUDA do not)."""
    meta = torch.device("meta")
    ids = torch.zeros(3, 4, dtype=torch.long, device=meta)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "labels": torch.zeros(3, dtype=torch.long, device=meta)}
    objective = DistillObjective(TableClassifier().to(meta), "classifier")
    loss, metrics = objective.loss(DistillStudent(TableClassifier().to(meta)), batch)
    assert metrics["tokens"].device == loss.device == meta
