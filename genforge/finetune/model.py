"""Loading a base model for fine-tuning and shaping what trains: dropout override, freezing, LoRA.

Any local Hugging Face folder works: a genforge run (Llama decoder, BERT encoder), or a foreign one
such as the sentence-transformers MiniLM folder (a bare `BertModel`). Whether it is an encoder or a
decoder is read from its config, because that decides the pooling (first token vs last token).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from genforge.errors import ArtifactError, ConfigError
from genforge.models.load import adapter_base, detect_objective, from_pretrained, reading_weights

ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "albert", "deberta", "deberta-v2",
                 "mpnet", "camembert", "modernbert")
# Config keys that hold a dropout probability in the common architectures (BERT, Llama, GPT-2, ...).
DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout", "classifier_dropout",
                "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout", "dropout")


def is_decoder(config: dict[str, Any]) -> bool:
    """True for a causal LM (last-token pooling), False for a bidirectional encoder ([CLS] pooling)."""
    try:
        return detect_objective(config) == "clm"
    except ArtifactError:
        return config.get("model_type") not in ENCODER_TYPES


def hf_config(path: Path, *, dropout: float = -1.0, **overrides: Any) -> Any:
    """The model's AutoConfig with `overrides` and, if dropout >= 0, every dropout probability replaced.

    A LoRA adapter folder is refused rather than merged into its base: a run fine-tuned from that merge
    would record the adapter's base as its own, and a LoRA adapter of it would then load without the first.
    """
    from transformers import AutoConfig

    base = adapter_base(path)
    if base is not None and not (Path(path) / "config.json").is_file():
        raise ArtifactError(f"model {path} is a LoRA adapter, not a full model: fine-tune from its base {base}, "
                            "or from a merged model (train the adapter with --merge)")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"cannot read the config of model {path}: {str(e).splitlines()[0]}") from None
    if dropout >= 0:
        for key in DROPOUT_KEYS:
            if isinstance(getattr(config, key, None), float | int) and not isinstance(getattr(config, key), bool):
                setattr(config, key, float(dropout))
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def load_pretrained(auto: Any, path: Path, config: Any) -> tuple[Any, list[str]]:
    """(`auto.from_pretrained` in fp32, offline, SDPA attention where the architecture has it; the modules
    it had to initialise).

    The new modules (a classification layer; BERT's pooler when the checkpoint is an MLM) matter to
    LoRA: they are random, so an adapter must carry them (`modules_to_save`) or reloading it on the
    base would draw them again. The path is made absolute so an adapter records a base path that works
    from any directory.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights were newly initialised": expected for a new head
    try:
        model, info = from_pretrained(auto, Path(path).resolve(), config=config, dtype=torch.float32,
                                      output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, sorted({key.rsplit(".", 1)[0] for key in info.get("missing_keys", ())})


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise ArtifactError(f"cannot load a tokenizer from {path}: {str(e).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:  # decoders often have none; padding is masked anyway
        if tokenizer.eos_token is None:
            raise ArtifactError(f"tokenizer of {path} has neither a pad nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def layer_list(model: nn.Module) -> nn.ModuleList | None:
    """The transformer blocks: the first ModuleList as long as `num_hidden_layers` (BERT, Llama, GPT-2, ...)."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    return None


def freeze(model: nn.Module, *, layers: int = 0, embeddings: bool = False) -> None:
    """Stop gradients to the first `layers` blocks and/or the input embeddings (token, position, type)."""
    if layers:
        blocks = layer_list(model)
        if blocks is None:
            raise ConfigError(f"cannot find the transformer layers of {type(model).__name__} to freeze")
        if layers > len(blocks):
            raise ConfigError(f"--freeze-layers {layers} but the model has only {len(blocks)} layers")
        for block in list(blocks)[:layers]:
            block.requires_grad_(False)
    if embeddings:
        model.get_input_embeddings().requires_grad_(False)
        for module in model.modules():  # BERT-style position/type embeddings live beside the token ones
            if isinstance(module, nn.Embedding):
                module.requires_grad_(False)


def trainable_params(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


class Wrapped(nn.Module):
    """An HF model behind a module without `save_pretrained`, so engine checkpoints hold its full state.

    With LoRA, `PeftModel.save_pretrained` would save the adapter alone and a run could not resume;
    through this wrapper every checkpoint is the whole state dict, for full and LoRA runs alike.
    """

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, **kwargs: Any) -> Any:
        return self.model(**kwargs)


def load_weights(module: nn.Module, folder: Path) -> None:
    """Load an engine checkpoint (model.safetensors of a wrapped module) back into `module`."""
    from safetensors.torch import load_model

    path = Path(folder) / "model.safetensors"
    with reading_weights(path):
        missing, unexpected = load_model(module, str(path), strict=False)
    if missing or unexpected:
        raise ArtifactError(f"checkpoint {folder} does not fit the model (missing {sorted(missing)[:3]}, "
                            f"unexpected {sorted(unexpected)[:3]})")
