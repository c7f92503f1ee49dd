"""`--method prune` (unstructured sparsity) and `--method prune-structured` (FFN neurons, attention heads).

Importance, for both:
- `magnitude`: |W|. Unstructured pruning ranks all weights of the transformer blocks' linear layers
  together (one global threshold); structured pruning scores a neuron by the norms of its input rows
  and output column, a head by the norms of its value rows and output-projection columns.
- `wanda` (Sun et al. 2023): |W_ij| x ||x_j||, with ||x_j|| the L2 norm of input feature j over the
  calibration tokens (the first `--calibration-batches` batches of --data). Unstructured: compared
  within each output row, as in the paper. Structured: a neuron (a head) is scored by the Wanda
  scores of its column(s) of the output projection, the only place its activation enters.

Unstructured pruning keeps the dense layout (the zeros take the same space and time: it is a quality
study and a base for sparse kernels); structured pruning removes rows and columns, so the model is
really smaller and faster. Every layer keeps the same number of neurons and heads, so a pruned Llama
or BERT FFN is a standard config (`intermediate_size`, `num_attention_heads` + `head_dim` for Llama);
only BERT with fewer heads needs genforge's loader ("resized" in compression.json).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from genforge.compress.blocks import Block, blocks, layers_of, prune_ffn, prune_heads, record_sizes


def block_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The linear layers inside the transformer blocks, by their name in `model` (embeddings, LM heads
    and classifier layers are left alone: they are few weights and carry every prediction)."""
    layers = layers_of(model)
    inside = {id(m) for layer in layers for m in layer.modules()}
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and id(m) in inside}


def run_model(model: nn.Module, batch: dict[str, torch.Tensor], kind: str) -> None:
    if kind == "classifier":
        model(batch["input_ids"], batch["attention_mask"])
    else:
        model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))


@torch.no_grad()
def input_norms(model: nn.Module, linears: dict[str, nn.Linear], batches: Iterable[dict[str, torch.Tensor]],
                kind: str) -> dict[str, torch.Tensor]:
    """||x_j||_2 of every input feature j of each linear layer over all calibration tokens (Wanda's ||X||).

    Padding positions are included for classifier batches: they are few after length-sorted padding,
    and their activations are real inputs the layer sees.
    """
    sums = {name: torch.zeros(m.in_features, dtype=torch.float64) for name, m in linears.items()}

    def hook(name: str):
        def record(module: nn.Module, args: tuple, output: Any) -> None:
            x = args[0].detach().reshape(-1, module.in_features).double()
            sums[name] += (x * x).sum(0)
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in linears.items()]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            run_model(model, batch, kind)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: s.sqrt().float() for name, s in sums.items()}


@torch.no_grad()
def prune_unstructured(model: nn.Module, sparsity: float, norms: dict[str, torch.Tensor] | None = None
                       ) -> dict[str, float]:
    """Zero `sparsity` of the block weights: global magnitude threshold, or per-row Wanda (with `norms`)."""
    linears = block_linears(model)
    if norms is None:
        magnitudes = torch.cat([m.weight.detach().abs().flatten() for m in linears.values()])
        k = int(sparsity * magnitudes.numel())
        threshold = torch.kthvalue(magnitudes, k).values if k else magnitudes.new_tensor(-1.0)
        for m in linears.values():
            m.weight[m.weight.abs() <= threshold] = 0.0
    else:
        for name, m in linears.items():
            score = m.weight.abs() * norms[name][None, :]
            k = int(sparsity * m.in_features)
            if k:
                drop = torch.topk(score, k, dim=1, largest=False).indices
                m.weight.scatter_(1, drop, 0.0)
    zeros = sum(int((m.weight == 0).sum()) for m in linears.values())
    total = sum(m.weight.numel() for m in linears.values())
    return {"sparsity": zeros / total, "pruned_weights": zeros}


def keep_masks(model: nn.Module) -> list[Any]:
    """Gradient hooks that keep pruned (zero) weights at zero while recovery fine-tuning trains the rest.

    A zero gradient leaves AdamW's moments at zero, so the update of a pruned weight is exactly zero and
    decoupled weight decay keeps 0 at 0. Returns the hook handles (remove them after training).
    """
    return [m.weight.register_hook(zero_pruned((m.weight != 0).to(m.weight.dtype)))
            for m in block_linears(model).values()]


def zero_pruned(mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A gradient hook multiplying by `mask`, which follows the gradient's device: the masks are taken before the
    engine moves the model to its device (a GPU), so the first backward copies the mask there, once."""
    held = [mask]

    def hook(grad: torch.Tensor) -> torch.Tensor:
        if held[0].device != grad.device:
            held[0] = held[0].to(grad.device)
        return grad * held[0]

    return hook


def _kept(total: int, fraction: float, multiple: int = 1) -> int:
    """How many of `total` units stay, rounded to a multiple of `multiple` when `total` is one (kernels
    like widths that are multiples of 8), at least one."""
    keep = total - round(total * fraction)
    if multiple > 1 and total % multiple == 0 and keep >= multiple:
        keep = multiple * round(keep / multiple)
    return max(1, min(total, keep))


def _ffn_multiple(width: int) -> int:
    """What a pruned FFN width is rounded to: 32 when the width is a multiple of it (the int4 kernel's smallest
    group: a pruned down projection stays int4-eligible, where 248 inputs would fall back to int8), else 8."""
    return next((m for m in (32, 8) if width % m == 0), 1)


def _heads_kept(model: nn.Module, block: Block, fraction: float) -> int:
    """KV heads to keep. A Llama config must have hidden % heads == 0 (transformers checks it), so there
    the nearest count that satisfies it is taken (more heads on a tie); BERT keeps its config's head
    count (genforge's loader resizes the layers), so any count works."""
    total, group = block.kv_heads, block.heads // block.kv_heads
    wanted = _kept(total, fraction)
    config = getattr(model, "body", model).config
    if config.model_type != "llama":
        return wanted
    # all `total` heads is a valid count too (a small fraction of few heads rounds to removing none, as in BERT)
    valid = [k for k in range(1, total + 1) if config.hidden_size % (k * group) == 0]
    return min(valid, key=lambda k: (abs(k - wanted), -k))


def _ffn_scores(block: Block, norms: dict[str, torch.Tensor] | None, down_name: str) -> torch.Tensor:
    down = block.ffn_out.weight.detach()
    if norms is not None:
        return (down.abs() * norms[down_name][None, :]).sum(0)
    score = down.norm(dim=0)
    for linear in block.ffn_in:
        score = score * linear.weight.detach().norm(dim=1)
    return score


def _head_scores(block: Block, norms: dict[str, torch.Tensor] | None, out_name: str) -> torch.Tensor:
    """One score per KV head (with its group of query heads; one query head each without GQA)."""
    out = block.attn_out.weight.detach()
    per_column = (out.abs() * norms[out_name][None, :]).sum(0) if norms is not None else out.pow(2).sum(0)
    per_head = per_column.reshape(block.heads, block.head_dim).sum(1)
    per_group = per_head.reshape(block.kv_heads, -1).sum(1)
    if norms is None:
        value = getattr(block.attention, block.v).weight.detach().reshape(block.kv_heads, -1).pow(2).sum(1)
        per_group = (per_group * value).sqrt()
    return per_group


@torch.no_grad()
def prune_structured(model: nn.Module, ffn_fraction: float, heads_fraction: float,
                     norms: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Remove the least important FFN neurons and attention heads of every layer (same count per layer).

    Returns the new sizes and, under "loader", what compression.json must record when the architecture's
    config cannot express them.
    """
    found = blocks(model)
    names = {id(m): n for n, m in model.named_modules()}
    ffn_keep = heads_keep = kv_keep = None
    for block in found:
        if ffn_fraction:
            scores = _ffn_scores(block, norms, names[id(block.ffn_out)])
            ffn_keep = _kept(len(scores), ffn_fraction, multiple=_ffn_multiple(len(scores)))
            prune_ffn(block, torch.topk(scores, ffn_keep).indices.sort().values)
        if heads_fraction:
            scores = _head_scores(block, norms, names[id(block.attn_out)])
            kv_keep = _heads_kept(model, block, heads_fraction)
            prune_heads(block, torch.topk(scores, kv_keep).indices.sort().values)
            heads_keep = block.heads
    loader = record_sizes(model, ffn_keep, heads_keep, kv_keep)
    return {"intermediate_size": ffn_keep, "attention_heads": heads_keep, "kv_heads": kv_keep, "loader": loader}
