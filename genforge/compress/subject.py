"""What `genforge compress` works on: a causal LM, a masked LM or a classifier, loaded and saved the
way every other genforge command loads and saves them.

Loading goes through the normal paths (`load_model`, `load_classifier`), so a LoRA adapter run or an
already compressed folder is compressed as what it serves as. Saving writes the same layouts the
training stages write (an HF LM folder; a classifier folder with classifier.json and, for custom heads,
head.safetensors), so the output feeds `generate`, `chat`, `predict`, `eval` and a later compress.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from genforge.artifacts import write_json
from genforge.models.load import COMPRESSION, detect_objective, fit_tokenizer, read_model_config


@dataclass
class Subject:
    """A loaded model and what it is: kind "clm" | "mlm" | "classifier"."""

    kind: str
    model: nn.Module  # an HF LM, or a genforge Classifier (body + optional head)
    tokenizer: Any
    info: dict[str, Any] | None = None  # classifier.json of a classifier

    @property
    def transformer(self) -> nn.Module:
        """The HF model that holds the transformer blocks (a classifier's body)."""
        return getattr(self.model, "body", self.model)

    def replace(self, model: nn.Module) -> Subject:
        return Subject(self.kind, model, self.tokenizer, self.info)

    def copy(self) -> Subject:
        return self.replace(copy.deepcopy(self.model))


def kind_of(folder: Path) -> str:
    """"classifier" for a `finetune classify` run, else the LM objective ("clm" or "mlm") of the folder."""
    from genforge.finetune.classifier import CLASSIFIER_JSON

    if (Path(folder) / CLASSIFIER_JSON).is_file():
        return "classifier"
    return detect_objective(read_model_config(folder))


def load_subject(folder: Path) -> Subject:
    """The model in `folder` (eval mode, float32 or as compressed), its tokenizer and kind."""
    from genforge.finetune.model import load_tokenizer

    folder = Path(folder)
    kind = kind_of(folder)
    if kind == "classifier":
        from genforge.finetune.classifier import load_classifier

        model, tokenizer, info = load_classifier(folder)
        return Subject(kind, model.eval(), tokenizer, info)
    from genforge.models.load import load_model

    model, _ = load_model(folder)
    return Subject(kind, model.eval(), load_tokenizer(folder))


def save_subject(subject: Subject, out: Path, compression: dict[str, Any] | None = None) -> None:
    """Write the model folder; `compression` (a compression.json) when it needs genforge's loader.

    For the "quantized" loader the weights are written by quantize.save_quantized, for "onnx" by the
    exporter (both before this call); any other model is saved with `save_pretrained`.
    """
    from genforge.finetune.lora import save_model

    out = Path(out)
    loader = (compression or {}).get("loader")
    body = subject.transformer
    if loader == "quantized":
        from genforge.compress.quantize import save_quantized

        compression = {**compression, **save_quantized(body, out, compression)}
    elif loader == "onnx":
        body.config.save_pretrained(out)
        if getattr(body, "generation_config", None) is not None and body.can_generate():  # a chat model's stops
            body.generation_config.save_pretrained(out)
    else:
        save_model(body, out, merge=False)
    fit_tokenizer(subject.tokenizer, body.config).save_pretrained(out)
    if subject.kind == "classifier":
        from safetensors.torch import save_file

        from genforge.finetune.classifier import CLASSIFIER_JSON, HEAD_WEIGHTS

        head = getattr(subject.model, "head", None)
        if head is not None:
            save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(out / HEAD_WEIGHTS),
                      metadata={"format": "pt"})
        write_json(out / CLASSIFIER_JSON, {**subject.info, "lora": None, "adapter": False})
        typos = getattr(subject.model, "typos", None)
        if typos is not None:
            from genforge.finetune.typos import save_vocabulary

            save_vocabulary(typos.counts, out)
    if compression is not None:
        write_json(out / COMPRESSION, compression)
