"""`--method int8|int4`: quantise a model's linear layers in place, save it, and load it back.

Every `nn.Linear` of the transformer becomes a `QLinear` (see qlinear.py), except a classifier's
final output layer (a few hundred weights whose errors go straight into the decision). The input
embedding table is stored as int8 rows too (dequantised at load: a lookup reads one row, so it
costs no speed to keep it in float in memory), and a head tied to it (Llama, BERT's MLM decoder)
computes with those same int8 rows, so the tie still stores one table. With int4 the output head
stays int8: its errors go straight into every logit, and it is one matrix of many.

A quantised folder is the usual HF folder (config.json, tokenizer, generation_config.json) with the
weights in `quantized.safetensors` instead of `model.safetensors` and a `compression.json` that says
how to rebuild the modules. Plain `from_pretrained` refuses it (no model.safetensors) rather than
loading random weights; `genforge.models.load.load_model` and `load_classifier` load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from genforge.compress.qlinear import QLinear, dequantize_int8, int4_group, quantize_int8
from genforge.errors import ArtifactError

QUANTIZED_WEIGHTS = "quantized.safetensors"
KEEP_FLOAT = ("classifier", "score")  # the final layer of a sequence classifier (BERT, Llama)


def _linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] not in KEEP_FLOAT]


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _module_name(model: nn.Module, module: nn.Module | None) -> str | None:
    return next((n for n, m in model.named_modules() if m is module), None) if module is not None else None


def quantize_model(model: nn.Module, scheme: str, group_size: int = 64) -> dict[str, Any]:
    """Replace the linear layers of an HF model by `QLinear`s (scheme "int8-dynamic", "int8" or "int4");
    return the layout `compression.json` records. The model changes in place."""
    embedding = model.get_input_embeddings()
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = output is not None and output.weight is embedding.weight
    head = _module_name(model, output)
    emb_q, emb_scale = quantize_int8(embedding.weight)
    with torch.no_grad():  # what the saved model will hold: the table's int8 rows, dequantised
        embedding.weight.copy_(dequantize_int8(emb_q, emb_scale))
    layout: dict[str, dict[str, Any]] = {}
    for name, linear in _linears(model):
        layer_scheme = scheme
        group = int4_group(linear.in_features, group_size) if scheme == "int4" else 0
        if scheme == "int4" and (name == head or not group or linear.out_features % 16):
            layer_scheme = "int8"
        if tied and name == head:
            q = QLinear(layer_scheme, emb_q, emb_scale, linear.bias, linear.in_features, tied=True)
        else:
            q = QLinear.from_linear(linear, layer_scheme, group)
        _set_module(model, name, q)
        layout[name] = {"scheme": layer_scheme, "group_size": group, "in_features": linear.in_features}
    return {"linears": layout, "embedding": _module_name(model, embedding), "tied_head": head if tied else None}


def quantized_state(model: nn.Module, layout: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors to save: each QLinear's stored form, the embedding table as int8 rows + scales (a tied
    head's rows are those rows), everything else as it is."""
    embedding, tied = layout["embedding"], layout["tied_head"]
    tensors = {key: value.detach().contiguous() for key, value in model.state_dict().items()
               if key != f"{embedding}.weight"}
    if tied:
        q, scale = model.get_submodule(tied).stored()
    else:
        q, scale = quantize_int8(model.get_submodule(embedding).weight)
    tensors[f"{embedding}.qweight"], tensors[f"{embedding}.scales"] = q, scale
    for name in layout["linears"]:
        module = model.get_submodule(name)
        if module.bias is not None:
            tensors[f"{name}.bias"] = module.bias
        if name != tied:
            tensors[f"{name}.qweight"], tensors[f"{name}.scales"] = module.stored()
    return tensors


def save_quantized(model: nn.Module, folder: Path, layout: dict[str, Any]) -> dict[str, Any]:
    """Write quantized.safetensors (+ the config files); return the `compression.json` entries for it."""
    from safetensors.torch import save

    from genforge.artifacts import atomic_write_bytes

    atomic_write_bytes(Path(folder) / QUANTIZED_WEIGHTS, save(quantized_state(model, layout), metadata={"format": "pt"}))
    model.config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None and getattr(model, "can_generate", lambda: False)():
        model.generation_config.save_pretrained(folder)
    return {"loader": "quantized", "weights": QUANTIZED_WEIGHTS, **layout}


def load_quantized(folder: Path, model: nn.Module, info: dict[str, Any]) -> nn.Module:
    """Turn a freshly built float `model` into the saved quantised one (weights from `folder`)."""
    from safetensors.torch import load_file

    path = Path(folder) / info.get("weights", QUANTIZED_WEIGHTS)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: the quantised model in {folder} is incomplete")
    tensors = load_file(str(path))
    embedding, tied = info["embedding"], info.get("tied_head")
    try:
        emb_q, emb_scale = tensors.pop(f"{embedding}.qweight"), tensors.pop(f"{embedding}.scales")
        replaced = set()
        for name, spec in info["linears"].items():
            if name == tied:
                q, s = emb_q, emb_scale
            else:
                q, s = tensors.pop(f"{name}.qweight"), tensors.pop(f"{name}.scales")
            bias = tensors.pop(f"{name}.bias", None)
            _set_module(model, name, QLinear(spec["scheme"], q, s, bias, spec["in_features"], spec["group_size"],
                                             tied=name == tied))
            replaced.add(name)
        tensors[f"{embedding}.weight"] = dequantize_int8(emb_q, emb_scale)
    except (KeyError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"{path} does not match its compression.json: {e}") from None
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if k.rsplit(".", 1)[0] not in replaced]
    if missing or unexpected:
        raise ArtifactError(f"{path} does not fit the model (missing {sorted(missing)[:3]}, "
                            f"unexpected {sorted(unexpected)[:3]})")
    return model.eval()
