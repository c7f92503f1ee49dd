"""The step-level decoder: `prefill(prompts) -> state`, then `decode_step(state) -> next tokens`.

This is the seam the serving engine builds on (see docs/generation.md). A `DecodeState` is a batch of
rows in one KV cache: row b holds its prompt left-padded to start at column `start[b]`, every step
writes one column for all rows, and each row carries its own sampling parameters, generator, token
budget and finished flag. A step samples from the pending logits and only then runs the model on
the sampled tokens (lazily, at the next step), so no forward is wasted after the last token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genforge.errors import ArtifactError, ConfigError
from genforge.generate.config import SamplingParams
from genforge.generate.hf import HFRunner
from genforge.generate.llama import LlamaRunner, from_hf, unsupported_reason
from genforge.generate.sampling import Sampler, new_sampler, next_tokens

CHAT_END = "<|im_end|>"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class DecodeState:
    """A batch being decoded. Rows never move; a finished row keeps its slot until the batch ends."""

    cache: Any
    start: torch.Tensor  # [B] first cache column of each row's prompt (left padding before it)
    padded: bool  # some row has padding, so attention needs a mask
    col: int  # cache columns written so far (the next token goes to column `col`)
    logits: torch.Tensor | None  # [B, vocab] float32 next-token logits, when not yet sampled
    pending: torch.Tensor | None  # [B] tokens sampled but not yet run through the model
    sampler: Sampler
    stop_ids: frozenset[int]  # token ids that end a sequence (EOS; <|im_end|> in chat)
    max_new_tokens: list[int]  # per row, already capped by the model's context
    tokens: list[list[int]]  # generated ids per row, without the stop token
    finished: torch.Tensor  # [B] bool
    finish_reason: list[str | None]  # "eos" | "length" | "stop" (a caller's stop, e.g. a stop string)

    @property
    def done(self) -> bool:
        return bool(self.finished.all())

    def finish(self, row: int, reason: str) -> None:
        """End one row now (stop string hit, client gone); the others go on."""
        if not self.finished[row]:
            self.finished[row] = True
            self.finish_reason[row] = reason


@dataclass
class Decoder:
    """A loaded causal LM ready to decode: a runner (the forward), its tokenizer and its stop tokens."""

    runner: LlamaRunner | HFRunner
    tokenizer: Any
    eos_ids: tuple[int, ...]
    pad_id: int
    context: int | None  # longest sequence the model was built for

    @property
    def backend(self) -> str:
        return self.runner.name

    def encode(self, prompt: str, chat: bool = False) -> list[int]:
        """Token ids of a prompt (chat: wrapped in the chat template with the assistant turn opened)."""
        tok = self.tokenizer
        if chat:
            if not getattr(tok, "chat_template", None):
                raise ConfigError("the model's tokenizer has no chat template; drop --chat")
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           tokenize=False)
            ids = tok(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tok(prompt)["input_ids"]
        # An empty prompt starts a fresh document: EOS is the separator the model saw between documents.
        return list(ids) or [self.eos_ids[0] if self.eos_ids else self.pad_id]

    def stop_ids(self, chat: bool = False) -> tuple[int, ...]:
        ids = list(self.eos_ids)
        if chat and CHAT_END in self.tokenizer.get_vocab():  # a chat model's generation config may list it already
            ids.append(self.tokenizer.convert_tokens_to_ids(CHAT_END))
        return tuple(dict.fromkeys(ids))

    def prefill(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams] | None = None,
                max_new_tokens: int | list[int] = 128, stop_ids: tuple[int, ...] | None = None) -> DecodeState:
        """Run the prompts (token ids, any lengths) as one left-padded batch; the state holds the next logits."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ConfigError("prefill needs at least one prompt, each with at least one token")
        batch = len(prompts)
        params = params if isinstance(params, list) else [params or SamplingParams()] * batch
        budgets = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * batch
        if len(params) != batch or len(budgets) != batch or min(budgets) <= 0:
            raise ConfigError("prefill needs one SamplingParams and one max_new_tokens > 0 per prompt")
        lengths = [len(p) for p in prompts]
        width = max(lengths)
        if self.context is not None:
            if width >= self.context:
                raise ConfigError(f"a prompt of {width} tokens leaves no room in the model's context of "
                                  f"{self.context} tokens; shorten it")
            budgets = [min(b, self.context - n) for b, n in zip(budgets, lengths, strict=True)]
        ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, width - len(p):] = torch.tensor(p)
        start = torch.tensor([width - n for n in lengths])
        padded = bool(start.any())
        positions = (torch.arange(width)[None] - start[:, None]).clamp(min=0)
        cache = self.runner.new_cache(batch, width + max(budgets))
        logits = self.runner.forward(cache, ids, positions, 0, start if padded else None)
        return DecodeState(
            cache=cache, start=start, padded=padded, col=width, logits=logits, pending=None,
            sampler=new_sampler(params, prompts, logits.shape[-1]),
            stop_ids=frozenset(self.eos_ids if stop_ids is None else stop_ids),
            max_new_tokens=budgets, tokens=[[] for _ in prompts], finished=torch.zeros(batch, dtype=torch.bool),
            finish_reason=[None] * batch)

    def decode_step(self, state: DecodeState) -> torch.Tensor:
        """One new token per row: [B] ids, -1 for rows that had already finished.

        A row that samples a stop token finishes with reason "eos" (the id is returned but not added to
        `state.tokens`); one that reaches its budget finishes with "length".
        """
        if state.done:
            raise ConfigError("decode_step on a finished batch")
        if state.pending is not None:
            positions = (state.col - state.start)[:, None]
            state.logits = self.runner.forward(state.cache, state.pending[:, None], positions, state.col,
                                               state.start if state.padded else None)
            state.col += 1
        tokens = next_tokens(state.logits, state.sampler)
        was_active = ~state.finished
        for row, (active, token) in enumerate(zip(was_active.tolist(), tokens.tolist(), strict=True)):
            if not active:
                continue
            if token in state.stop_ids:
                state.finish(row, "eos")
                continue
            state.tokens[row].append(token)
            if len(state.tokens[row]) >= state.max_new_tokens[row]:
                state.finish(row, "length")
        state.logits, state.pending = None, (None if state.done else tokens)
        return torch.where(was_active, tokens, -1)


def _tokenizer_of(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise ArtifactError(f"cannot load a tokenizer from {path}: {str(e).splitlines()[0]}") from None


def _eos_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    ids: list[int] = []
    gen = getattr(model, "generation_config", None)
    for value in (tokenizer.eos_token_id, getattr(gen, "eos_token_id", None), model.config.eos_token_id):
        for i in value if isinstance(value, list | tuple) else [value]:
            if i is not None and i not in ids:
                ids.append(int(i))
    return tuple(ids)


def load_decoder(model: str | Path | Any, tokenizer: Any = None, dtype: str = "auto",
                 backend: str = "auto") -> Decoder:
    """A Decoder from a local HF model folder, an HF model object (pass its tokenizer) or a Decoder.

    dtype "auto" keeps the model's dtype: float32 for a folder (batch-1 decoding is faster in it than in
    bfloat16 on CPUs, and it is the only choice that matches HF's greedy tokens), bfloat16 for a
    `compress --method bf16` copy (faster at batch 8 on a CPU with AMX). backend "auto" takes the fast
    Llama forward when the architecture allows and the model's own forward otherwise.
    """
    from genforge.finetune.classifier import refuse_classifier
    from genforge.models.load import (
        check_finished_run,
        detect_objective,
        load_model,
        max_positions,
        read_model_config,
    )

    if isinstance(model, Decoder):
        return model
    if isinstance(model, str | Path):
        path = Path(model)
        check_finished_run(path)
        refuse_classifier(path, f"it labels texts (`genforge predict --model {path}`); generation needs a causal "
                                "LM such as a `genforge pretrain` or `finetune sft` run")
        config = read_model_config(path)
        if detect_objective(config) != "clm":
            archs = ", ".join(config.get("architectures") or [config.get("model_type", "?")])
            raise ArtifactError(f"model {path} is not a causal language model ({archs}); "
                                "generation needs a *ForCausalLM folder")
        tokenizer = tokenizer or _tokenizer_of(path)
        model, _ = load_model(path, "clm")
    elif tokenizer is None:
        raise ConfigError("pass the tokenizer along with a model object: load_decoder(model, tokenizer)")
    on = next(model.parameters(), torch.empty(0)).device  # an ONNX Runtime model has no parameters
    if on.type != "cpu":  # the runners keep their caches, positions and masks on the CPU
        raise ConfigError(f"the model is on {on}, and genforge generates on the CPU: pass model.cpu(), or serve "
                          "it from a GPU with vLLM (docs/serve.md)")
    model.eval()
    torch_dtype = model.dtype if dtype == "auto" else DTYPES[dtype]
    reason = unsupported_reason(model)
    if backend == "fast" and reason:
        raise ConfigError(f"backend 'fast' cannot run this model: {reason}; use backend 'hf' or 'auto'")
    vocab = model.config.vocab_size
    if hasattr(model, "decode_runner"):  # a model with its own step runtime (ONNX Runtime, genforge.compress)
        runner = model.decode_runner()
    elif backend != "hf" and reason is None:
        runner: LlamaRunner | HFRunner = LlamaRunner(from_hf(model, torch_dtype), vocab)
    else:
        runner = HFRunner(model.to(torch_dtype), vocab)
    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    return Decoder(runner=runner, tokenizer=tokenizer, eos_ids=eos, pad_id=pad, context=max_positions(model.config))
