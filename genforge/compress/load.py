"""Loading compressed model folders that plain `from_pretrained` cannot build: the loader behind the
normal paths (`genforge.models.load.load_model`, `genforge.finetune.classifier.load_classifier`).

A folder needs this when its `compression.json` names a loader:
- "quantized": `QLinear` layers and an int8 embedding table (quantize.py);
- "resized": linear layers smaller than the config implies (BERT with pruned attention heads: its
  config ties the head size to hidden / heads, so fewer heads cannot be said in config.json);
- "onnx": an ONNX Runtime graph instead of PyTorch weights (onnx.py);
- "bfloat16": a standard HF folder of bfloat16 weights, kept in bfloat16 (the normal paths load float32).
Folders that compress to a standard config (unstructured or Llama structured pruning, distilled
students) have no compression.json and load like any other model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genforge.errors import ArtifactError
from genforge.models.load import COMPRESSION, from_pretrained, load_state, use_generation_config

LOADERS = ("quantized", "resized", "onnx", "bfloat16")


def read_compression(folder: Path) -> dict[str, Any] | None:
    """The folder's compression.json, or None when it has none."""
    path = Path(folder) / COMPRESSION
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} is corrupt: {e}") from None
    if not isinstance(info, dict) or info.get("loader") not in LOADERS:
        raise ArtifactError(f"{path} names no loader genforge knows ({', '.join(LOADERS)})")
    return info


def build_float(auto: Any, config: Any) -> nn.Module:
    """The architecture of `config` with fresh float weights, to be overwritten by the saved ones."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return auto.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    finally:
        hf_logging.set_verbosity(verbosity)


def load_resized(folder: Path, model: nn.Module) -> nn.Module:
    """Load `model.safetensors` into `model` after shrinking each linear layer to its saved shape."""
    from safetensors import safe_open

    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: the pruned model in {folder} is incomplete")
    with safe_open(str(path), framework="pt") as f:
        shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 (not a dict)
        tensors = {key: f.get_tensor(key) for key in shapes}
    for name, module in list(model.named_modules()):
        saved = shapes.get(f"{name}.weight")
        if isinstance(module, nn.Linear) and saved and saved != tuple(module.weight.shape):
            parent, _, child = name.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            setattr(owner, child, nn.Linear(saved[1], saved[0], bias=module.bias is not None))
    load_state(model, tensors, str(path))
    return model.eval()


def load_compressed(folder: Path, auto: Any, config: Any, info: dict[str, Any] | None = None) -> nn.Module:
    """The model in a compressed folder, built for `auto` (an AutoModel* class) with `config`."""
    info = info or read_compression(folder)
    if info is None:
        raise ArtifactError(f"{folder} has no {COMPRESSION}")
    loaders: dict[str, Callable[[], nn.Module]] = {
        "quantized": lambda: _quantized(folder, build_float(auto, config), info),
        "resized": lambda: load_resized(folder, build_float(auto, config)),
        "onnx": lambda: _onnx(folder, config, info),
        "bfloat16": lambda: from_pretrained(auto, folder, config=config, dtype=torch.bfloat16).eval(),
    }
    return use_generation_config(loaders[info["loader"]](), folder)  # a chat model's stop ids, as saved


def _quantized(folder: Path, model: nn.Module, info: dict[str, Any]) -> nn.Module:
    from genforge.compress.quantize import load_quantized

    return load_quantized(folder, model, info)


def _onnx(folder: Path, config: Any, info: dict[str, Any]) -> nn.Module:
    from genforge.compress.onnx import load_onnx

    return load_onnx(folder, config, info)
