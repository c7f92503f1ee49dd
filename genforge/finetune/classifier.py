"""Building a classifier on a base model, saving it, and loading it back (the saved format).

A classifier run folder holds, beside the usual manifest/card/logs:
- `classifier.json`: genforge's description (labels, head, multi_label, decoder, seq_len, lora, base_model);
- full fine-tuning or `--merge`, linear head: a standard `*ForSequenceClassification` HF folder
  (config.json with id2label/label2id, model.safetensors): plain `AutoModelForSequenceClassification` loads it;
- full or merged, lstm/transformer head: the HF folder of the body (`AutoModel` loads it) + `head.safetensors`;
- LoRA adapter: `adapter_config.json` + `adapter_model.safetensors` (peft's own files; with a linear head
  the classification layer is in the adapter too) + `head.safetensors` for the custom heads;
- the tokenizer files;
- with `--correct-typos`: `typo_vocabulary.txt`, the training texts' words the typo corrector knows.
`load_classifier(folder)` reads every variant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge.errors import ArtifactError
from genforge.finetune.heads import HEADS, Classifier, build_head
from genforge.finetune.lora import adapter_base, load_adapted
from genforge.finetune.model import hf_config, is_decoder, load_pretrained, load_tokenizer
from genforge.finetune.typos import load_corrector
from genforge.models.load import COMPRESSION, check_weights

CLASSIFIER_JSON = "classifier.json"
HEAD_WEIGHTS = "head.safetensors"


def classification_config(path: Path, labels: list[str], multi_label: bool, pad_id: int | None,
                          dropout: float = -1.0) -> Any:
    """The base model's HF config turned into a classification config (labels, problem type, pad id).

    A decoder's `*ForSequenceClassification` reads the last token that is not `config.pad_token_id`, so that
    id must be the one batches are padded with (the tokenizer's, `pad_id`): a base whose config names
    another (a foreign checkpoint whose tokenizer pads with eos) would otherwise pool a pad position, and a
    text's prediction would depend on the longest text of its batch. An encoder keeps its own (RoBERTa
    counts its positions from it)."""
    config = hf_config(path, dropout=dropout, num_labels=len(labels), id2label=dict(enumerate(labels)),
                       label2id={lab: i for i, lab in enumerate(labels)},
                       problem_type="multi_label_classification" if multi_label else "single_label_classification")
    if pad_id is not None and (getattr(config, "pad_token_id", None) is None or is_decoder(config.to_dict())):
        config.pad_token_id = pad_id
    return config


def _auto(head: str) -> Any:
    from transformers import AutoModel, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if head == "linear" else AutoModel


def build_classifier(path: Path, *, head: str, labels: list[str], multi_label: bool, pad_id: int | None,
                     dropout: float = -1.0) -> tuple[Classifier, list[str]]:
    """(a classifier on the pretrained body at `path`, its newly initialised modules).

    A base that is itself a classifier keeps its head only for the same labels in the same order (training
    goes on); for other labels, or another number of them, the head is new and only the body is reused."""
    config = classification_config(path, labels, multi_label, pad_id, dropout)
    body, new_modules = load_body(path, head, config)
    if head == "linear":
        return Classifier(body), new_modules
    head_module = build_head(head, config.hidden_size, len(labels), dropout if dropout >= 0 else 0.1)
    saved_head = Path(path) / HEAD_WEIGHTS  # only a genforge classifier with a custom head has one
    if saved_head.is_file() and base_labels(path) == labels and read_info(path)["head"] == head:
        from safetensors.torch import load_file

        head_module.load_state_dict(load_file(str(saved_head)))
    return Classifier(body, head_module), new_modules


def load_body(path: Path, head: str, config: Any) -> tuple[Any, list[str]]:
    """(the model `head` needs from `path` under the classification `config`, its newly initialised modules):
    for the linear head a `*ForSequenceClassification`, whose head is new unless `path` is a classifier of
    the same labels; for the other heads the body alone (`AutoModel`)."""
    labels = [config.id2label[i] for i in range(config.num_labels)]
    known = base_labels(path)
    if head == "linear" and known is not None and known != labels:
        return with_new_head(path, config)
    return load_pretrained(_auto(head), path, config)


def base_labels(path: Path) -> list[str] | None:
    """The labels of a base that is a classifier (genforge's, or any `*ForSequenceClassification` folder) in
    the order of its outputs; None for a base without a classification head."""
    if (Path(path) / CLASSIFIER_JSON).is_file():
        return read_info(path)["labels"]
    config = hf_config(path)
    if not any(a.endswith("ForSequenceClassification") for a in config.architectures or ()):
        return None
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def with_new_head(path: Path, config: Any) -> tuple[Any, list[str]]:
    """A `*ForSequenceClassification` with a freshly initialised head on the body of the classifier at `path`
    (loading it whole would keep, or fail on, a head made for other labels)."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    body, _ = load_pretrained(AutoModel, path, config)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation=body.config._attn_implementation)
    missing, _ = model.base_model.load_state_dict(body.state_dict(), strict=False)
    if missing:
        raise ArtifactError(f"model {path}: its body lacks {missing[0]}, which a classifier of its kind needs")
    new = [name for name, module in model.named_children()
           if name != model.base_model_prefix and next(module.parameters(), None) is not None]
    return model.float(), new


# What every reader of classifier.json relies on: (key, check, what the check wants).
INFO_FIELDS = (
    ("labels", lambda v: isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v),
     "a non-empty list of label names"),
    ("multi_label", lambda v: isinstance(v, bool), "true or false"),
    ("head", lambda v: isinstance(v, str) and (v == "linear" or v in HEADS), f"one of linear, {', '.join(HEADS)}"),
    ("seq_len", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive integer"),
)


def refuse_classifier(folder: Path, purpose: str) -> None:
    """A one-line error when `folder` is a classifier run: a decoder-based classifier's config.json passes
    for a causal LM, so a command that needs one would otherwise load it and produce garbage."""
    if (Path(folder) / CLASSIFIER_JSON).is_file():
        raise ArtifactError(f"model {folder} is a classifier (a `genforge finetune classify` run), not a causal "
                            f"language model: {purpose}")


def read_info(folder: Path) -> dict[str, Any]:
    """classifier.json, checked for the fields every reader uses (a hand-edited file fails here, in one line)."""
    path = Path(folder) / CLASSIFIER_JSON
    if not Path(folder).is_dir():
        raise ArtifactError(f"model folder {folder} does not exist")
    if not path.is_file():
        raise ArtifactError(f"{folder} has no {CLASSIFIER_JSON}: not a classifier "
                            "(make one with `genforge finetune classify`)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} is corrupt: {e}") from None
    if not isinstance(info, dict):
        raise ArtifactError(f"{path} is corrupt: a JSON object was expected, not {type(info).__name__}")
    for key, ok, wanted in INFO_FIELDS:
        if not ok(info.get(key)):
            raise ArtifactError(f"{path} is corrupt: \"{key}\" must be {wanted}; retrain the classifier "
                                "or restore the file")
    return info


def load_classifier(folder: Path) -> tuple[Classifier, Any, dict[str, Any]]:
    """(classifier in eval mode, tokenizer, classifier.json) from a classifier run folder (any variant)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    info = read_info(folder)
    check_weights(folder)  # the model, adapter and head files: a truncated copy fails here, naming the file
    tokenizer = load_tokenizer(folder)
    base = adapter_base(folder)
    config = classification_config(base or folder, info["labels"], info["multi_label"], tokenizer.pad_token_id)
    if (folder / COMPRESSION).is_file():  # quantised, head-pruned or ONNX (genforge compress)
        from genforge.compress.load import load_compressed

        body = load_compressed(folder, _auto(info["head"]), config)
    elif base is None:
        body, _ = load_body(folder, info["head"], config)
    else:  # the adapter's base as it was trained on (a classifier of other labels gets its new head back)
        body = load_adapted(folder, lambda p: load_body(p, info["head"], config)[0])
    head = None
    if info["head"] != "linear":
        if not (folder / HEAD_WEIGHTS).is_file():
            raise ArtifactError(f"{folder} lacks {HEAD_WEIGHTS} for its '{info['head']}' head")
        head = build_head(info["head"], config.hidden_size, len(info["labels"])).to(body.dtype)  # bf16 copies
        head.load_state_dict(load_file(str(folder / HEAD_WEIGHTS)))
    return Classifier(body, head, load_corrector(folder)).eval(), tokenizer, info


@torch.no_grad()
def predict_probs(model: Classifier, tokenizer: Any, texts: list[str], *, seq_len: int, multi_label: bool,
                  batch_size: int = 32, progress: Any = None,
                  features: str | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Class probabilities [len(texts), labels]: softmax (single-label) or per-label sigmoid (multi-label).

    Texts pass the model's typo corrector if it has one, then are batched by token length (less padding);
    rows come back in the input order. `features`
    "first" / "last" also returns the last hidden layer at the first token (encoders' [CLS]) or the last
    real token (decoders), [len(texts), hidden], as (probs, features).
    """
    from genforge.finetune.batches import pad

    was_training = model.training
    model.eval()
    ids = tokenize(model, tokenizer, texts, seq_len)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    device = next(model.parameters(), torch.empty(0)).device  # an ONNX Runtime body has no parameters
    out = np.zeros((len(texts), model_labels(model)), dtype=np.float32)
    pooled = None
    for first in range(0, len(order), batch_size):
        rows = order[first:first + batch_size]
        input_ids = pad([ids[i] for i in rows], tokenizer.pad_token_id)
        mask = pad([[1] * len(ids[i]) for i in rows], 0)
        logits = model(input_ids.to(device), mask.to(device), hidden=features is not None)
        if features is not None:
            logits, states = logits
            at = torch.zeros(len(rows), dtype=torch.long) if features == "first" else mask.sum(1) - 1
            vectors = states[torch.arange(len(rows)), at.to(states.device)].float().cpu().numpy()
            pooled = np.zeros((len(texts), vectors.shape[1]), np.float32) if pooled is None else pooled
            pooled[rows] = vectors
        logits = logits.float()
        probs = torch.sigmoid(logits) if multi_label else torch.softmax(logits, -1)
        out[rows] = probs.cpu().numpy()
        if progress:
            progress(len(rows))
    model.train(was_training)
    return out if features is None else (out, pooled)


def tokenize(model: Classifier, tokenizer: Any, texts: list[str], seq_len: int) -> list[list[int]]:
    """Token ids of `texts` as `model` reads them: through its typo corrector, if any; an empty text is one pad."""
    if model.typos is not None:
        texts = model.typos.correct(list(texts))
    ids = tokenizer(list(texts), truncation=True, max_length=seq_len)["input_ids"]
    return [row or [tokenizer.pad_token_id] for row in ids]


def model_labels(model: Classifier) -> int:
    if model.head is not None:
        return model.head.out.out_features
    return model.body.config.num_labels
