"""Model presets: a decoder (Llama) for causal LM and an encoder (BERT) for masked LM, in CPU-sized steps.

Builders are plain functions returning Hugging Face models, so every run folder is a standard HF folder
that `AutoModelFor*.from_pretrained` loads without genforge. Sizes (non-embedding parameters):
tiny ~0.4 M (tests, smoke runs), small ~5 M, base ~48 M; with an 8k vocabulary add hidden x 8192.
The decoder is the Llama block (RMSNorm, RoPE, SwiGLU MLP of ~8/3 x hidden rounded to a multiple of
32, i.e. the parameters of a 4x GELU MLP) with tied input/output embeddings, which saves vocab x hidden
parameters that small models cannot afford; heads are 64 wide. The encoder is the classic BERT block
(GELU MLP of 4 x hidden, learned positions, tied decoder). On tiny-shakespeare (1 MB, BPE 1024),
`small` with attention dropout 0.2 and weight decay 0.2 reaches 2.11 validation bits per byte after
1000 steps of 16 x 256 tokens (no dropout: 2.17, overfitting after ~1000 steps).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genforge.errors import ConfigError

# hidden, layers, heads, intermediate (0 = derived from hidden)
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 128, "num_layers": 2, "num_heads": 4, "intermediate_size": 0},
    "small": {"hidden_size": 256, "num_layers": 6, "num_heads": 4, "intermediate_size": 0},
    "base": {"hidden_size": 576, "num_layers": 12, "num_heads": 9, "intermediate_size": 0},
}
SIZE_KEYS = ("hidden_size", "num_layers", "num_heads", "intermediate_size")


def resolve_size(preset: str, overrides: dict[str, int] | None = None) -> dict[str, int]:
    """The size keys of a preset; `custom` is `small` changed by the non-zero `overrides`.

    Size overrides with a named preset are refused rather than silently mixed, so `--preset small`
    always means the same model.
    """
    given = {k: v for k, v in (overrides or {}).items() if v}
    if preset == "custom":
        if not given:
            raise ConfigError("--preset custom needs at least one of --hidden-size, --num-layers, "
                              "--num-heads, --intermediate-size")
        size = dict(SIZES["small"])
        if "hidden_size" in given and "num_heads" not in given:
            size["num_heads"] = max(1, given["hidden_size"] // 64)
        size.update(given)
    elif preset in SIZES:
        if given:
            raise ConfigError(f"--{next(iter(given)).replace('_', '-')} is for --preset custom; "
                              f"'{preset}' has a fixed size")
        size = dict(SIZES[preset])
    else:
        raise ConfigError(f"unknown preset '{preset}' (known: {', '.join([*SIZES, 'custom'])})")
    if size["hidden_size"] % size["num_heads"]:
        raise ConfigError(f"hidden size {size['hidden_size']} is not divisible by {size['num_heads']} heads")
    return size


def swiglu_width(hidden: int) -> int:
    """SwiGLU MLP width: 8/3 x hidden (same parameters as a 4x GELU MLP), rounded up to a multiple of 32."""
    return 32 * math.ceil(hidden * 8 / 3 / 32)


def model_config(objective: str, preset: str, *, vocab_size: int, max_positions: int,
                 special_ids: dict[str, int], overrides: dict[str, int] | None = None,
                 dropout: float = 0.0) -> Any:
    """The Hugging Face config of a fresh model: LlamaConfig for `clm`, BertConfig for `mlm`."""
    from transformers import BertConfig, LlamaConfig

    size = resolve_size(preset, overrides)
    hidden, layers, heads = size["hidden_size"], size["num_layers"], size["num_heads"]
    if objective == "clm":
        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=heads,
            intermediate_size=size["intermediate_size"] or swiglu_width(hidden),
            max_position_embeddings=max_positions, tie_word_embeddings=True, attention_dropout=dropout,
            rms_norm_eps=1e-5, pad_token_id=special_ids.get("pad"), bos_token_id=special_ids.get("bos"),
            eos_token_id=special_ids.get("eos"), attn_implementation="sdpa")
    if objective == "mlm":
        return BertConfig(
            vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=size["intermediate_size"] or 4 * hidden, max_position_embeddings=max_positions,
            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, type_vocab_size=1,
            pad_token_id=special_ids.get("pad", 0), tie_word_embeddings=True, attn_implementation="sdpa")
    raise ConfigError(f"unknown objective '{objective}' (known: clm, mlm)")


def build_model(config: Any, objective: str) -> Any:
    """A freshly initialised model (fp32 weights, SDPA attention) for a config from `model_config`,
    or for the config.json of a checkpoint whose weights are loaded next."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    auto = AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM
    return auto.from_config(config, dtype=torch.float32, attn_implementation="sdpa")


def count_params(model: Any) -> dict[str, int]:
    """Total and non-embedding parameters (token, position and type embeddings excluded, Kaplan et al.).

    A tied output head shares the token embedding and so is not counted twice.
    """
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(m.weight.numel() for m in model.modules() if type(m).__name__ == "Embedding")
    return {"total": total, "non_embedding": total - embedding}


def meta_params(build: Callable[..., Any], *args: Any) -> int:
    """Parameters of the module `build(*args)` makes, built on torch's meta device: shapes only, nothing allocated."""
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in build(*args).parameters())


def config_params(config: Any, objective: str) -> int:
    """Parameters of `build_model(config, objective)` without allocating them: a one- and a two-layer copy are
    counted on the meta device and extrapolated (the layers are alike), since even on meta an absurd
    `num_hidden_layers` would take hours and all the memory in module objects alone."""
    counts = []
    for layers in (1, 2):
        small = copy.deepcopy(config)
        small.num_hidden_layers = layers
        counts.append(meta_params(build_model, small, objective))
    return counts[0] + (config.num_hidden_layers - 1) * (counts[1] - counts[0])


def flops_per_token(model: Any, seq_len: int) -> float:
    """Training FLOPs per token, as nanoGPT's estimate_mfu: 6 N + 12 L H Q T.

    N counts every weight that takes part in a matmul: the non-embedding parameters plus the output
    head (vocab x hidden), which is a real matmul even when it is tied to the input embedding.
    The second term is attention (QK^T and AV) over a context of `seq_len`.
    """
    cfg = model.config
    n = count_params(model)["non_embedding"] + cfg.vocab_size * cfg.hidden_size
    return 6 * n + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq_len


def fresh_encoder(texts: list[str], folder: Path, *, vocab_size: int = 8000, max_positions: int = 64,
                  preset: str = "small", seed: int = 0) -> Path:
    """A fresh BERT (`preset`) on a byte-level BPE trained on `texts`, saved as an HF folder (written beside
    `folder`, then renamed): the base for text in a script the available pre-trained encoders barely cover,
    such as Chinese for MiniLM (it knows 183 of the Chinese characters in FinFE's training texts)."""
    import shutil

    import torch

    from genforge.data.tokenizer import build_bpe, wrap_for_transformers
    from genforge.models.load import hf_bars_off

    tokenizer = wrap_for_transformers(build_bpe(iter(texts), vocab_size, show_progress=False))
    torch.manual_seed(seed)
    config = model_config("mlm", preset, vocab_size=len(tokenizer), max_positions=max_positions,
                          special_ids={"pad": tokenizer.pad_token_id}, dropout=0.1)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with hf_bars_off():
        build_model(config, "mlm").save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder
