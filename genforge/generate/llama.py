"""A compact Llama inference forward over the Hugging Face weights, with a preallocated KV cache.

Why not the HF module: on a small model most of a decode step is Python and dispatch overhead (module
hooks, output dataclasses, cache objects, mask builders), not arithmetic. This forward does the same
maths in a handful of tensor ops per layer: q/k/v fused into one matmul, gate/up fused into one, RoPE
applied to q and k together from a precomputed table, `F.rms_norm`, SDPA with grouped KV heads. The
weights are the HF model's own tensors (fused copies for q/k/v and gate/up), so there is nothing to
convert and the parity test (tests/generate/test_llama.py) compares against the HF implementation.

KV cache layout: one tensor [layers, 2, batch, kv_heads, max_len, head_dim]. Column c of every row
holds the token written at decode time c; row b is valid from column `start[b]` (left padding), so
its position ids are `c - start[b]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# RoPE variants whose inverse frequencies are fixed at load time; "dynamic" and "longrope" change them
# with the sequence length at run time, so those models take the generic HF path.
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn", "proportional")


@dataclass
class LayerWeights:
    attn_norm: torch.Tensor
    wqkv: torch.Tensor  # [hidden, (heads + 2 * kv_heads) * head_dim]
    bqkv: torch.Tensor | None
    wo: torch.Tensor
    bo: torch.Tensor | None
    mlp_norm: torch.Tensor
    w_gate_up: torch.Tensor  # [hidden, 2 * intermediate]
    b_gate_up: torch.Tensor | None
    w_down: torch.Tensor
    b_down: torch.Tensor | None


@dataclass
class LlamaWeights:
    embed: torch.Tensor
    layers: list[LayerWeights]
    norm: torch.Tensor
    lm_head: torch.Tensor  # [hidden, vocab]
    inv_freq: torch.Tensor  # RoPE inverse frequencies, from the model's own rotary module
    rope_scale: float  # its attention scaling (1 except for yarn-like types)
    heads: int
    kv_heads: int
    head_dim: int
    eps: float

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.dtype


def unsupported_reason(model) -> str | None:
    """Why the fast path cannot run this HF model (None if it can): the caller falls back to HF's forward."""
    cfg = model.config
    if type(model).__name__ != "LlamaForCausalLM":
        return f"{type(model).__name__} is not LlamaForCausalLM"
    if cfg.hidden_act != "silu":
        return f"activation {cfg.hidden_act!r} (fast path has SwiGLU/silu only)"
    rope_type = (getattr(cfg, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope_type not in STATIC_ROPE_TYPES:
        return f"rope_type {rope_type!r} changes with sequence length"
    if getattr(cfg, "pretraining_tp", 1) not in (1, None):
        return "pretraining_tp > 1"
    return None


def from_hf(model, dtype: torch.dtype) -> LlamaWeights:
    """Gather the weights of an HF LlamaForCausalLM for `forward`: fused, transposed to [in, out].

    [in, out] because a one-row `x @ w` over a contiguous [in, out] matrix runs about twice as fast as
    `F.linear` over HF's [out, in] on this CPU (measured in benchmarks/bench_generate.py's notes).
    """
    cfg = model.config

    def t(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.detach().to(dtype).contiguous()

    def linear(*mods: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not isinstance(mods[0], torch.nn.Linear):  # quantised (genforge.compress.qlinear): it fuses itself
            return type(mods[0]).fuse(mods).kernel(dtype), None
        weight = t(torch.cat([m.weight.detach() for m in mods]).t())
        bias = None if mods[0].bias is None else t(torch.cat([m.bias.detach() for m in mods]))
        return weight, bias

    layers = []
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        (wqkv, bqkv), (wo, bo) = linear(a.q_proj, a.k_proj, a.v_proj), linear(a.o_proj)
        (w_gate_up, b_gate_up), (w_down, b_down) = linear(m.gate_proj, m.up_proj), linear(m.down_proj)
        layers.append(LayerWeights(attn_norm=t(layer.input_layernorm.weight), wqkv=wqkv, bqkv=bqkv, wo=wo, bo=bo,
                                   mlp_norm=t(layer.post_attention_layernorm.weight), w_gate_up=w_gate_up,
                                   b_gate_up=b_gate_up, w_down=w_down, b_down=b_down))
    rotary = model.model.rotary_emb
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return LlamaWeights(embed=t(model.model.embed_tokens.weight), layers=layers, norm=t(model.model.norm.weight),
                        lm_head=linear(model.lm_head)[0], inv_freq=rotary.inv_freq.detach().float().cpu(),
                        rope_scale=float(rotary.attention_scaling), heads=cfg.num_attention_heads,
                        kv_heads=cfg.num_key_value_heads or cfg.num_attention_heads,
                        head_dim=head_dim, eps=cfg.rms_norm_eps)


@dataclass
class KVCache:
    kv: torch.Tensor  # [layers, 2, batch, kv_heads, max_len, head_dim]
    cos: torch.Tensor  # [max_len, head_dim] per position, attention scaling folded in
    sin: torch.Tensor  # [max_len, head_dim], with the sign of rotate_half folded in


def new_cache(w: LlamaWeights, batch: int, max_len: int) -> KVCache:
    """A zeroed cache for `batch` rows of `max_len` columns, with RoPE tables for positions < max_len."""
    freqs = torch.arange(max_len, dtype=torch.float32)[:, None] * w.inv_freq[None]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos() * w.rope_scale, emb.sin() * w.rope_scale
    half = sin.shape[-1] // 2
    # rotate_half(x) * sin == flip_halves(x) * [-sin_1, sin_2]: the sign lives in the table.
    sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)
    kv = torch.zeros(len(w.layers), 2, batch, w.kv_heads, max_len, w.head_dim, dtype=w.dtype)
    return KVCache(kv=kv, cos=cos.to(w.dtype), sin=sin.to(w.dtype))


def attention_mask(start: torch.Tensor, col: int, length: int) -> torch.Tensor:
    """Boolean SDPA mask [batch, 1, length, col + length]: causal, and blind to each row's left padding.

    A padding query sees nothing; SDPA returns zeros for such a row (no NaN), and its output is never read.
    """
    keys = torch.arange(col + length)
    queries = torch.arange(col, col + length)[:, None]
    allowed = (keys[None, None] >= start[:, None, None]) & (keys[None] <= queries[None])
    return allowed[:, None]


def _mm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    y = x @ w if isinstance(w, torch.Tensor) else w(x)  # w: a matrix, or a quantised layer's kernel function
    return y if b is None else y + b


@torch.inference_mode()
def forward(w: LlamaWeights, cache: KVCache, tokens: torch.Tensor, positions: torch.Tensor,
            col: int, mask: torch.Tensor | None, all_logits: bool = False) -> torch.Tensor:
    """Run `tokens` [batch, length] written at cache columns [col, col + length); return float32 logits.

    `positions` [batch, length] are the RoPE positions; `mask` is `attention_mask(...)` or None when no
    row is padded. Returns the last position's logits [batch, vocab] (all positions with `all_logits`).
    """
    batch, length = tokens.shape
    heads, kv_heads, hd = w.heads, w.kv_heads, w.head_dim
    qk_heads, end = heads + kv_heads, col + length
    cos, sin = cache.cos[positions][:, :, None], cache.sin[positions][:, :, None]  # [B, L, 1, hd]
    if mask is None and length > 1 and col > 0:  # SDPA's is_causal aligns queries with the first keys
        mask = attention_mask(torch.zeros(batch, dtype=torch.long), col, length)
    is_causal = mask is None and length > 1
    x = F.embedding(tokens, w.embed)
    for i, lw in enumerate(w.layers):
        h = F.rms_norm(x, (x.shape[-1],), lw.attn_norm, w.eps)
        qkv = _mm(h, lw.wqkv, lw.bqkv).view(batch, length, qk_heads + kv_heads, hd)
        qk = qkv[:, :, :qk_heads]
        qk = qk * cos + qk.view(batch, length, qk_heads, 2, hd // 2).flip(3).view_as(qk) * sin
        kv = cache.kv[i]
        kv[0, :, :, col:end] = qk[:, :, heads:].transpose(1, 2)
        kv[1, :, :, col:end] = qkv[:, :, qk_heads:].transpose(1, 2)
        keys, values = kv[0, :, :, :end], kv[1, :, :, :end]
        q = qk[:, :, :heads].transpose(1, 2)
        if length == 1:  # one query per row: fold the query heads of each KV group into the query axis
            q = q.reshape(batch, kv_heads, heads // kv_heads, hd)
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        else:
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=is_causal,
                                               enable_gqa=heads != kv_heads)
            o = o.transpose(1, 2)
        x = x + _mm(o.reshape(batch, length, heads * hd), lw.wo, lw.bo)
        h = F.rms_norm(x, (x.shape[-1],), lw.mlp_norm, w.eps)
        gate, up = _mm(h, lw.w_gate_up, lw.b_gate_up).chunk(2, dim=-1)
        x = x + _mm(F.silu(gate) * up, lw.w_down, lw.b_down)
    if not all_logits:
        x = x[:, -1]
    return _mm(F.rms_norm(x, (x.shape[-1],), w.norm, w.eps), w.lm_head, None).float()


@dataclass
class LlamaRunner:
    """The fast backend of `Decoder`: this file's forward over weights taken from an HF Llama."""

    weights: LlamaWeights
    vocab_size: int
    name: str = "fast"

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        return new_cache(self.weights, batch, max_len)

    def forward(self, cache: KVCache, tokens: torch.Tensor, positions: torch.Tensor, col: int,
                start: torch.Tensor | None) -> torch.Tensor:
        mask = None if start is None else attention_mask(start, col, tokens.shape[1])
        return forward(self.weights, cache, tokens, positions, col, mask)
