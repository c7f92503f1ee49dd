import json
import shutil

import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from genforge.artifacts import read_manifest
from genforge.errors import DataError
from genforge.finetune.classifier import CLASSIFIER_JSON, load_classifier, predict_probs
from genforge.finetune.classify import ClassifyObjective, classify, encode_targets, evaluate_folder
from genforge.finetune.config import ClassifyConfig
from genforge.finetune.run import runs_on
from genforge.finetune.teacher import distill_loss, mean_logits, teacher_logits


def tiny_cfg(**overrides) -> ClassifyConfig:
    values = dict(max_steps=6, batch_size=8, seq_len=32, lr=3e-3, warmup_steps=1, eval_every=3, log_every=1,
                  bf16=False)
    values.update(overrides)
    return ClassifyConfig(**values)


def test_encoder_linear_head_is_a_standard_hf_classifier(tmp_path, bert_dir, sentiment_csv):
    out = classify(tiny_cfg(model=bert_dir, data=sentiment_csv, out=tmp_path / "run"))
    manifest = read_manifest(out, "finetune")
    assert manifest["task"] == "classify" and manifest["labels"] == ["negative", "positive"]
    metrics = manifest["metrics"]
    assert 0 <= metrics["val_accuracy"] <= 1 and metrics["train_examples"] + metrics["val_examples"] == 60
    assert (out / "logs" / "confusion.png").stat().st_size > 0 and (out / "README.md").is_file()
    report = json.loads((out / "logs" / "val_report.json").read_text())
    assert set(report["per_class"]) == {"negative", "positive"}

    # Plain transformers loads it, labels included, and agrees with genforge's loader.
    hf = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert hf.config.id2label == {0: "negative", 1: "positive"} and hf.config.label2id["positive"] == 1
    tok = AutoTokenizer.from_pretrained(out)
    texts = ["profits rose sharply", "weak demand hit the stock"]
    model, tokenizer, info = load_classifier(out)
    ours = predict_probs(model, tokenizer, texts, seq_len=32, multi_label=False)
    with torch.no_grad():
        theirs = torch.softmax(hf(**tok(texts, return_tensors="pt", padding=True)).logits, -1).numpy()
    assert ours == pytest.approx(theirs, abs=1e-5)
    assert evaluate_folder(out, [(t, ["positive"]) for t in texts])["n"] == 2

    # An HF pipeline truncates a long text at the model's 256 positions (the tokenizer used to claim 2048,
    # and BERT then failed on a text past 256 tokens).
    from transformers import pipeline

    assert tok.model_max_length == 256
    classifier = pipeline("text-classification", model=str(out), tokenizer=str(out))
    assert classifier(" ".join(["profits rose sharply"] * 200), truncation=True)[0]["label"] in ("negative", "positive")


def test_a_classifier_base_keeps_its_head_only_for_the_same_labels(tmp_path, bert_dir, sentiment_csv):
    """Fine-tuning a classifier further: on the same labels its head goes on training; on other labels (another
    number of them failed as "config.json does not match the weights": a corrupt folder) the body is reused
    under a new head."""
    from genforge.finetune.classifier import build_classifier

    linear = classify(tiny_cfg(model=bert_dir, data=sentiment_csv, out=tmp_path / "linear"))
    three = tmp_path / "three.csv"
    rows = sentiment_csv.read_text().splitlines()
    three.write_text("\n".join(rows + [f"{r.rsplit(',', 1)[0]} again,neutral" for r in rows[1:21]]) + "\n")
    out = classify(tiny_cfg(model=linear, data=three, out=tmp_path / "three"))
    assert read_manifest(out, "finetune")["labels"] == ["negative", "neutral", "positive"]
    adapter = classify(tiny_cfg(model=linear, data=three, out=tmp_path / "three-lora", lora_r=4))
    assert evaluate_folder(adapter, [("profits rose", ["neutral"])])["n"] == 1  # its base reloads with a new head

    old = load_classifier(linear)[0].body
    same, new_same = build_classifier(linear, head="linear", labels=["negative", "positive"], multi_label=False,
                                      pad_id=0)
    other, new_other = build_classifier(linear, head="linear", labels=["bad", "good"], multi_label=False, pad_id=0)
    assert new_same == [] and torch.equal(same.body.classifier.weight, old.classifier.weight)
    assert new_other == ["classifier"] and not torch.equal(other.body.classifier.weight, old.classifier.weight)
    assert torch.equal(other.body.bert.pooler.dense.weight, old.bert.pooler.dense.weight)

    mean = classify(tiny_cfg(model=bert_dir, data=sentiment_csv, out=tmp_path / "mean", head="mean"))
    saved = load_classifier(mean)[0].head
    kept = build_classifier(mean, head="mean", labels=["negative", "positive"], multi_label=False, pad_id=0)[0]
    fresh = build_classifier(mean, head="mean", labels=["bad", "good"], multi_label=False, pad_id=0)[0]
    assert same_weights(kept.head, saved) and not same_weights(fresh.head, saved)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_an_encoder_without_sdpa_fine_tunes(tmp_path, tokenizer, save_folder, sentiment_csv):
    """MPNet (all-mpnet-base-v2) has no SDPA attention: it trains with plain attention and reloads."""
    from transformers import MPNetConfig, MPNetModel

    cfg = MPNetConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=80, pad_token_id=0)
    base = save_folder(MPNetModel(cfg), tokenizer, tmp_path / "mpnet")
    out = classify(tiny_cfg(model=base, data=sentiment_csv, out=tmp_path / "run", head="mean"))
    model, tokenizer, _ = load_classifier(out)
    assert model.body.config._attn_implementation == "eager"
    probs = predict_probs(model, tokenizer, ["profits rose"], seq_len=32, multi_label=False)
    assert probs.shape == (1, 2) and probs.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("head", ["lstm", "transformer", "mean"])
def test_decoder_multi_label_with_custom_heads(tmp_path, jsonl, llama_dir, head):
    records = [{"text": f"card {i} blocked and refund late", "tags": "card|refund"} for i in range(20)]
    records += [{"text": f"refund {i} please", "tags": ["refund"]} for i in range(20)]
    records += [{"text": f"lost card {i}", "tags": "card"} for i in range(20)]
    data = jsonl("tags.jsonl", records)
    out = classify(tiny_cfg(model=llama_dir, data=data, out=tmp_path / head, head=head, multi_label=True,
                            label_field="tags", label_sep="|", label_smoothing=0.1, dropout=0.0))
    info = json.loads((out / CLASSIFIER_JSON).read_text())
    assert info["labels"] == ["card", "refund"] and info["multi_label"] and info["decoder"]
    assert (out / "head.safetensors").is_file() and (out / "model.safetensors").is_file()
    from safetensors import safe_open

    with safe_open(str(out / "head.safetensors"), "pt") as f:  # as transformers writes its own files
        assert f.metadata() == {"format": "pt"}
    front = yaml.safe_load((out / "README.md").read_text().split("---")[1])  # no HF library loads the head
    assert "library_name" not in front and "genforge-loader" in front["tags"]
    model, tokenizer, _ = load_classifier(out)
    probs = predict_probs(model, tokenizer, ["lost card 3", "refund 2 please"], seq_len=32, multi_label=True)
    assert probs.shape == (2, 2) and ((probs > 0) & (probs < 1)).all()
    assert not torch.allclose(torch.from_numpy(probs.sum(1)), torch.ones(2))  # sigmoids, not a softmax
    # features at the last real token, whatever the padding of the batch (the short text is padded)
    texts = ["lost card 3", "card 7 blocked and refund late again"]
    again, features = predict_probs(model, tokenizer, texts, seq_len=32, multi_label=True, features="last")
    assert again == pytest.approx(predict_probs(model, tokenizer, texts, seq_len=32, multi_label=True), abs=1e-5)
    with torch.no_grad():
        alone = model.body(**tokenizer(texts[:1], return_tensors="pt")).last_hidden_state[0, -1]
    assert features.shape == (2, model.body.config.hidden_size)
    assert features[0] == pytest.approx(alone.numpy(), abs=1e-4)


def test_objective_losses():
    logits = torch.tensor([[2.0, -1.0], [0.0, 3.0]])
    model = lambda ids, mask: logits  # noqa: E731 - the objective only needs logits from (ids, mask)
    batch = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3)}
    single = encode_targets([("a", ["x"]), ("b", ["y"])], ["x", "y"], False)
    loss, metrics = ClassifyObjective(False).loss(model, {**batch, "labels": single})
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).item())
    assert metrics["tokens"] == 2
    smooth, _ = ClassifyObjective(False, 0.2).loss(model, {**batch, "labels": single})
    assert smooth > loss
    multi = encode_targets([("a", ["x", "y"]), ("b", [])], ["x", "y"], True)
    assert multi.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    bce, _ = ClassifyObjective(True).loss(model, {**batch, "labels": multi})
    assert bce == pytest.approx(torch.nn.functional.binary_cross_entropy_with_logits(logits, multi).item())
    teacher = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # a teacher's logits mix in by the distill weight
    mixed, _ = ClassifyObjective(False, 0.0, 0.25, 2.0).loss(model, {**batch, "labels": single, "teacher": teacher})
    assert mixed == pytest.approx(0.75 * loss.item() + 0.25 * distill_loss(logits, teacher, False, 2.0).item())


def test_bad_labels(tmp_path, jsonl, bert_dir):
    one = jsonl("one.jsonl", [{"text": f"t{i}", "label": "same"} for i in range(30)])
    with pytest.raises(DataError, match="only one label"):
        classify(tiny_cfg(model=bert_dir, data=one, out=tmp_path / "x"))
    train = jsonl("train.jsonl", [{"text": f"t{i}", "label": i % 2} for i in range(10)])
    val = jsonl("val.jsonl", [{"text": "v", "label": 7}])
    with pytest.raises(DataError, match=r"validation labels never seen in training: \['7'\]"):
        classify(tiny_cfg(model=bert_dir, data=train, val_data=val, out=tmp_path / "y"))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_distill_loss_is_zero_only_where_the_student_agrees_with_the_teacher():
    teacher = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    for multi_label in (False, True):
        student = teacher.clone().requires_grad_()
        distill_loss(student, teacher, multi_label, 2.0).backward()
        assert student.grad.abs().max() < 1e-6  # a minimum where they agree
        other = torch.zeros_like(teacher).requires_grad_()
        distill_loss(other, teacher, multi_label, 2.0).backward()
        assert other.grad.abs().max() > 1e-3
    # single-label: a KL, so zero at agreement, also up to a constant per row (log-probs stand for logits)
    assert distill_loss(teacher, teacher.log_softmax(-1), False, 3.0) == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(torch.zeros_like(teacher), teacher, False, 1.0) > 0


def test_a_confident_teachers_small_probabilities_reach_the_student():
    """The target was softmax(log(max(p, 1e-6)) / T): a teacher 20 nats sure (p ~ 2e-9 per other class) gave
    the 76 other classes of 77 7% of the mass at T = 2 instead of Hinton's softmax(z / T)'s 0.34%."""
    z = torch.zeros(3, 77)
    z[:, 0] = torch.tensor([5.0, 20.0, 200.0])  # 200: the other classes' float32 probabilities are 0
    z[:, 1] = 2.0  # the ratios among the small probabilities are the teacher's knowledge
    target = mean_logits([z.softmax(-1).numpy()], multi_label=False)
    for t in (1.0, 2.0, 4.0):
        assert torch.allclose((target / t).softmax(-1), (z / t).softmax(-1), atol=1e-6)
    student = torch.zeros(3, 77, requires_grad=True)
    loss = distill_loss(student, target, False, 2.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    z2 = torch.randn(3, 77) * 3  # an ensemble teaches its mean probabilities
    mean = (z.softmax(-1) + z2.softmax(-1)) / 2
    assert torch.allclose(mean_logits([z.softmax(-1).numpy(), z2.softmax(-1).numpy()], False).softmax(-1), mean,
                          atol=1e-6)


def test_a_decoder_pools_its_last_token_whatever_pad_id_its_config_names(tmp_path, llama_dir):
    """A base whose config.json names another pad id than the one its tokenizer pads with: the linear head
    pooled a pad position, so a text's prediction depended on the longest text of its batch (a class's
    probability moved by up to 0.2 on a random Llama)."""
    from genforge.finetune.classifier import build_classifier
    from genforge.finetune.model import load_tokenizer

    base = shutil.copytree(llama_dir, tmp_path / "llama")
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps(config | {"pad_token_id": 5}))
    tokenizer = load_tokenizer(base)
    assert tokenizer.pad_token_id != 5
    model, _ = build_classifier(base, head="linear", labels=["a", "b", "c"], multi_label=False,
                                pad_id=tokenizer.pad_token_id)
    short, long = "profits rose", "shares dropped sharply after weak results and a long warning about the year"
    alone = predict_probs(model, tokenizer, [short], seq_len=64, multi_label=False)
    beside_long = predict_probs(model, tokenizer, [short, long], seq_len=64, multi_label=False)
    assert alone[0] == pytest.approx(beside_long[0], abs=1e-5)


def test_student_learns_from_a_teacher_with_its_own_tokenizer(tmp_path, bert_dir, llama_dir, sentiment_csv):
    """A decoder teacher (its own tokenizer, labels in the same set) guides an encoder student."""
    teacher = classify(tiny_cfg(model=llama_dir, data=sentiment_csv, out=tmp_path / "teacher", head="mean"))
    texts = ["profits rose sharply", "weak demand hit the stock"]
    model, tokenizer, info = load_classifier(teacher)
    probs = predict_probs(model, tokenizer, texts, seq_len=32, multi_label=False)
    logits = teacher_logits([teacher, teacher], texts, ["positive", "negative"], False, batch_size=4)
    assert logits.exp().numpy() == pytest.approx(probs[:, ::-1], abs=1e-5)  # columns follow the labels given

    out = classify(tiny_cfg(model=bert_dir, data=sentiment_csv, out=tmp_path / "student", teacher=[teacher],
                            distill_weight=1.0))
    manifest = read_manifest(out, "finetune")
    assert manifest["teachers"][0]["path"] == str(teacher) and "val_accuracy" in manifest["teachers"][0]["metrics"]
    with pytest.raises(DataError, match="a teacher needs the same labels"):
        teacher_logits([teacher], texts, ["bad", "good"], False, batch_size=4)


class MeanTable(torch.nn.Module):
    """Class logits as a mean of per-token rows: runs on any device, meta included (HF models do not)."""

    def __init__(self, vocab: int = 16, classes: int = 2):
        super().__init__()
        self.table = torch.nn.Embedding(vocab, classes)

    def forward(self, input_ids, attention_mask):
        return self.table(input_ids).mean(1)


def test_the_example_count_is_made_where_the_labels_are():
    """Evaluation stacks the count with the loss: both must be on the device. Meta tensors stand in for a GPU's
    (CPU and meta tensors do not stack, as CPU and CUDA do not)."""
    meta = torch.device("meta")
    ids = torch.zeros(3, 4, dtype=torch.long, device=meta)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.zeros(3, dtype=torch.long,
                                                                                             device=meta)}
    loss, metrics = ClassifyObjective(multi_label=False).loss(MeanTable().to(meta), batch)
    assert metrics["tokens"].device == loss.device == meta


def test_a_quantised_or_onnx_classifier_runs_on_the_cpu_whatever_the_device(tmp_path, classifier_dir):
    """Their kernels (QLinear, ONNX Runtime) exist for the CPU only; every other classifier goes to the device
    asked for (meta stands in for the GPU `device()` picks there)."""
    meta = torch.device("meta")
    for loader, where in (("quantized", "cpu"), ("onnx", "cpu"), ("resized", "meta")):
        folder = tmp_path / loader
        folder.mkdir()
        (folder / "compression.json").write_text(json.dumps({"loader": loader}), encoding="utf-8")
        assert runs_on(folder, meta).type == where
    assert runs_on(classifier_dir, meta) == meta
