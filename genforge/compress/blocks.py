"""The transformer blocks of Llama and BERT models, seen the same way: attention heads and FFN neurons.

Pruning and distillation need to know, per layer, which linear layers hold the attention heads
(q/k/v rows, output-projection columns) and the FFN neurons (input-projection rows, output-projection
columns). `blocks(model)` answers that for Llama decoders and BERT encoders (and the classifiers and
masked LMs built on them); `shrink` rebuilds a linear layer with a subset of its rows or columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from genforge.errors import ConfigError


@dataclass
class Block:
    """One transformer layer: where its linears live (module, attribute) and its head layout."""

    attention: nn.Module  # owner of q/k/v
    q: str
    k: str
    v: str
    out_owner: nn.Module  # owner of the attention output projection
    out: str
    ffn_owner: dict[str, nn.Module]  # name -> owner, for the FFN input projections (rows = neurons)
    down_owner: nn.Module
    down: str
    heads: int
    kv_heads: int
    head_dim: int

    @property
    def ffn_in(self) -> list[nn.Linear]:
        return [getattr(owner, name) for name, owner in self.ffn_owner.items()]

    @property
    def ffn_out(self) -> nn.Linear:
        return getattr(self.down_owner, self.down)

    @property
    def attn_out(self) -> nn.Linear:
        return getattr(self.out_owner, self.out)


def transformer_of(model: nn.Module) -> nn.Module:
    """The HF model inside a genforge Classifier (its body), or the model itself."""
    return getattr(model, "body", model)


def layers_of(model: nn.Module) -> nn.ModuleList:
    from genforge.finetune.model import layer_list

    layers = layer_list(transformer_of(model))
    if layers is None:
        raise ConfigError(f"cannot find the transformer layers of {type(transformer_of(model)).__name__}")
    return layers


def blocks(model: nn.Module) -> list[Block]:
    """The blocks of a Llama or BERT model (LM, classifier or bare body); other architectures are refused."""
    config = transformer_of(model).config
    found = []
    for layer in layers_of(model):
        kind = type(layer).__name__
        if kind == "LlamaDecoderLayer":
            a, m = layer.self_attn, layer.mlp
            heads = config.num_attention_heads
            found.append(Block(a, "q_proj", "k_proj", "v_proj", a, "o_proj", {"gate_proj": m, "up_proj": m},
                               m, "down_proj", heads, config.num_key_value_heads or heads,
                               a.head_dim))
        elif kind in ("BertLayer", "RobertaLayer"):
            s = layer.attention.self
            head_dim = s.attention_head_size
            found.append(Block(s, "query", "key", "value", layer.attention.output, "dense",
                               {"dense": layer.intermediate}, layer.output, "dense",
                               s.query.out_features // head_dim, s.query.out_features // head_dim, head_dim))
        else:
            raise ConfigError(f"structured compression supports Llama and BERT layers; this model has {kind}")
    return found


def shrink(linear: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    """A new linear layer keeping output `rows` and/or input `cols` of `linear` (bias follows the rows)."""
    weight = linear.weight.detach()
    bias = None if linear.bias is None else linear.bias.detach()
    if rows is not None:
        weight = weight[rows]
        bias = None if bias is None else bias[rows]
    if cols is not None:
        weight = weight[:, cols]
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def head_rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Row indices of the given heads in a [heads * head_dim, hidden] projection."""
    return (heads[:, None] * head_dim + torch.arange(head_dim)[None]).flatten()


def prune_ffn(block: Block, keep: torch.Tensor) -> None:
    """Keep FFN neurons `keep` (sorted indices): input projections lose rows, the output projection columns."""
    for name, owner in block.ffn_owner.items():
        setattr(owner, name, shrink(getattr(owner, name), rows=keep))
    setattr(block.down_owner, block.down, shrink(block.ffn_out, cols=keep))


def prune_heads(block: Block, keep_kv: torch.Tensor) -> None:
    """Keep the KV heads `keep_kv` (sorted) and the query heads that share them (all heads without GQA)."""
    group = block.heads // block.kv_heads
    q_heads = (keep_kv[:, None] * group + torch.arange(group)[None]).flatten()
    q_rows, kv_rows = head_rows(q_heads, block.head_dim), head_rows(keep_kv, block.head_dim)
    a = block.attention
    setattr(a, block.q, shrink(getattr(a, block.q), rows=q_rows))
    setattr(a, block.k, shrink(getattr(a, block.k), rows=kv_rows))
    setattr(a, block.v, shrink(getattr(a, block.v), rows=kv_rows))
    setattr(block.out_owner, block.out, shrink(block.attn_out, cols=q_rows))
    block.heads, block.kv_heads = len(q_heads), len(keep_kv)


def record_sizes(model: nn.Module, ffn: int | None, heads: int | None, kv_heads: int | None) -> dict[str, Any]:
    """Update the config to the pruned sizes where the architecture's config can say them; return what it
    cannot (BERT's head count is tied to hidden / heads in its config, so a genforge loader restores it)."""
    config = transformer_of(model).config
    needs_loader: dict[str, Any] = {}
    if ffn is not None:
        config.intermediate_size = ffn
    if heads is not None:
        if config.model_type == "llama":
            config.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            config.num_attention_heads, config.num_key_value_heads = heads, kv_heads
        else:
            needs_loader["attention_heads"] = heads
    return needs_loader
