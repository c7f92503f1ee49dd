"""The generic backend: any Hugging Face causal LM, driven by its own forward and a DynamicCache.

Used for architectures the fast Llama forward does not cover (GPT-2, Qwen, Mistral with sliding
windows, dynamic RoPE, ...). The decode loop, sampling and stopping are genforge's, only the forward
is the model's, so both backends behave the same way from the outside.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch


def _forward_params(model: Any) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


@dataclass
class HFRunner:
    model: Any
    vocab_size: int
    name: str = "hf"

    def __post_init__(self) -> None:
        params = _forward_params(self.model)
        # transformers 5 renamed `past_key_values` to `cache`; older or remote-code models keep the old name.
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.takes_positions = "position_ids" in params
        self.takes_keep = "logits_to_keep" in params

    def new_cache(self, batch: int, max_len: int) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    @torch.inference_mode()
    def forward(self, cache: Any, tokens: torch.Tensor, positions: torch.Tensor, col: int,
                start: torch.Tensor | None) -> torch.Tensor:
        length = tokens.shape[1]
        keys = torch.arange(col + length)[None]
        mask = torch.ones_like(keys) if start is None else (keys >= start[:, None])
        kwargs = {self.cache_arg: cache, "use_cache": True,
                  "attention_mask": mask.long().expand(tokens.shape[0], -1)}
        if self.takes_positions:
            kwargs["position_ids"] = positions
        if self.takes_keep:
            kwargs["logits_to_keep"] = 1
        return self.model(input_ids=tokens, **kwargs).logits[:, -1].float()
