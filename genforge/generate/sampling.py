"""Next-token choice: logits processors (repetition penalty, temperature, top-k, top-p) and seeded sampling.

Every parameter is a per-row tensor, so one batch can mix greedy and sampled sequences with different
settings, which is what a continuous-batching server needs when requests join a running batch. The
processors follow the semantics of Hugging Face's (same order: penalty, temperature, top-k, top-p).
Each row samples with its own `torch.Generator`, so a seeded sequence does not depend on its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genforge.generate.config import SamplingParams


@dataclass
class Sampler:
    """Per-row sampling state of a batch: parameters, generators and the tokens each row has seen."""

    temperature: torch.Tensor  # [B, 1] float; 0 = greedy
    top_k: torch.Tensor  # [B] long; 0 = off
    top_p: torch.Tensor  # [B, 1] float; 1 = off
    penalty: torch.Tensor  # [B, 1] float; 1 = off
    generators: list[torch.Generator]
    seen: torch.Tensor | None  # [B, vocab] bool, kept only when some row has a penalty


def new_sampler(params: list[SamplingParams], prompts: list[list[int]], vocab_size: int) -> Sampler:
    """Sampler for a batch: row i uses params[i]; its prompt tokens count as seen for the penalty."""
    generators = []
    for p in params:
        seed = p.seed if p.seed is not None else int(torch.randint(0, 2**62, ()).item())
        generators.append(torch.Generator().manual_seed(seed))
    penalty = torch.tensor([[p.repetition_penalty] for p in params])
    seen = None
    if (penalty != 1).any():
        seen = torch.zeros(len(params), vocab_size, dtype=torch.bool)
        for row, ids in enumerate(prompts):
            seen[row, [i for i in ids if 0 <= i < vocab_size]] = True
    return Sampler(temperature=torch.tensor([[p.temperature] for p in params]),
                   top_k=torch.tensor([p.top_k for p in params]),
                   top_p=torch.tensor([[p.top_p] for p in params]),
                   penalty=penalty, generators=generators, seen=seen)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """Make seen tokens less likely: positive logits are divided by the penalty, negative ones multiplied."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def apply_temperature(logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Divide by the temperature; greedy rows (0) are left as they are (they take the argmax anyway).

    Each row is first shifted so that its largest logit is 0, which leaves the softmax as it is: a tiny
    temperature (1e-39 is a valid request) then sends the other logits to -inf instead of the largest one to
    +inf, where the softmax would be NaN and the draw would return the last token of the vocabulary."""
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    return shifted / torch.where(temperature > 0, temperature, torch.ones_like(temperature))


def apply_top_k(logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Keep each row's k highest logits (ties with the k-th are kept too); k = 0 keeps all."""
    vocab = logits.shape[-1]
    k = torch.where(k > 0, k.clamp(max=vocab), torch.full_like(k, vocab))
    top = logits.topk(int(k.max()), dim=-1).values
    threshold = top.gather(-1, (k - 1)[:, None])
    return logits.masked_fill(logits < threshold, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches p (at least one); p = 1 keeps all."""
    sorted_logits, order = logits.sort(dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= 1 - p
    remove[:, -1] = False
    remove &= (p < 1)  # float rounding must not drop tail tokens when nucleus sampling is off
    return logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))


def draw(probs: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """One token per row from `probs` [B, vocab], by inverse CDF with one uniform from each row's generator.

    The CDF and the uniforms are float64: a float32 running sum cannot grow by less than half its rounding
    step (3e-8 once it passes 0.5), so tokens less likely than that could never be drawn and the others'
    shares drifted (a total variation of ~2e-4 from the softmax over a 32k vocabulary)."""
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators])
    cdf = probs.double().cumsum(dim=-1)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)
    return idx[:, 0].clamp(max=probs.shape[-1] - 1)


def next_tokens(logits: torch.Tensor, s: Sampler) -> torch.Tensor:
    """The next token of every row from float32 logits [B, vocab]; records it as seen."""
    if s.seen is not None:
        logits = apply_repetition_penalty(logits, s.seen, s.penalty)
    greedy = s.temperature[:, 0] == 0
    tokens = logits.argmax(dim=-1)
    if not greedy.all():
        x = apply_temperature(logits, s.temperature)
        if (s.top_k > 0).any():
            x = apply_top_k(x, s.top_k)
        if (s.top_p < 1).any():
            x = apply_top_p(x, s.top_p)
        tokens = torch.where(greedy, tokens, draw(x.softmax(dim=-1), s.generators))
    if s.seen is not None:
        s.seen[torch.arange(len(tokens)), tokens] = True
    return tokens
