"""Sequence generators of the text GANs: an LSTM, or any genforge decoder, behind one sampling interface.

A generator maps token ids to next-token logits. The LSTM also exposes `run(ids, state)`, so sampling
and SeqGAN's Monte-Carlo rollouts carry its state instead of re-reading the prefix; a Hugging Face
decoder (genforge's Llama presets) is re-run on the growing prefix, which is cheap at GAN lengths
(~20 tokens). Every sequence is generated after a start token (SeqGAN's convention: id 0 for the
oracle, BOS for real text), which is fed as input but never part of the sample.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class LstmGenerator(nn.Module):
    """Embedding -> one LSTM layer -> linear head: the generator (and oracle) of SeqGAN, at any size."""

    def __init__(self, vocab_size: int, embed_size: int = 32, hidden_size: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_size)
        self.lstm = nn.LSTM(embed_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def run(self, input_ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        out, state = self.lstm(self.embed(input_ids), state)
        return self.head(out), state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any) -> Any:
        """HF-style output (`.logits`), so the engine's causal-LM objective trains it unchanged."""
        return SimpleNamespace(logits=self.run(input_ids)[0])


def next_logits(model: Any, inputs: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
    """Logits of the token after `inputs`; `state` carries an LSTM's memory (None: read all of `inputs`)."""
    if hasattr(model, "run"):
        logits, state = model.run(inputs if state is None else inputs[:, -1:], state)
        return logits[:, -1], state
    return model(input_ids=inputs, use_cache=False).logits[:, -1], None


@torch.no_grad()
def sample(model: Any, n: int, length: int, start: int, *, prefix: torch.Tensor | None = None,
           temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """`n` sequences of `length` tokens (start token excluded); rows begin with `prefix` when given."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    inputs = torch.full((n, 1), start, dtype=torch.long, device=device)
    if prefix is not None:
        inputs = torch.cat([inputs, prefix.to(device)], dim=1)
    state = None
    while inputs.shape[1] <= length:
        logits, state = next_logits(model, inputs, state)
        # Gumbel-max: argmax(logits / T + Gumbel noise) is an exact draw, about 2x faster than multinomial
        u = torch.rand(logits.shape, generator=generator).clamp_(1e-20, 1.0).to(device)
        token = (logits.float() / temperature - torch.log(-torch.log(u))).argmax(-1, keepdim=True)
        inputs = torch.cat([inputs, token], dim=1)
    model.train(was_training)
    return inputs[:, 1:]


def token_log_probs(model: Any, seqs: torch.Tensor, start: int, temperature: float = 1.0) -> torch.Tensor:
    """log p(y_t | y_<t) of every token of `seqs` (B, L) under `model`, teacher-forced: (B, L)."""
    inputs = torch.cat([torch.full_like(seqs[:, :1], start), seqs[:, :-1]], dim=1)
    logits = model(input_ids=inputs).logits.float() / temperature
    return -F.cross_entropy(logits.transpose(1, 2), seqs, reduction="none")  # fused log-softmax + gather


@torch.no_grad()
def mean_nll(model: Any, seqs: torch.Tensor, start: int, *, temperature: float = 1.0, eos: int | None = None,
             batch_size: int = 500) -> float:
    """Mean negative log-likelihood per token (nats) of `seqs` under `model`: NLL-oracle and NLL-test.

    With `eos` (text rows padded with EOS to a fixed length) only each row's tokens up to its first EOS count:
    the padding after it is not text, and its near-certain EOS-after-EOS predictions diluted the mean.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i:i + batch_size].to(device)
        counted = torch.ones_like(chunk, dtype=torch.bool)
        if eos is not None:
            is_eos = (chunk == eos).long()
            counted = (is_eos.cumsum(1) - is_eos) == 0  # no EOS before this position
        total -= (token_log_probs(model, chunk, start, temperature).double() * counted).sum().item()
        tokens += int(counted.sum())
    model.train(was_training)
    return total / tokens


@torch.no_grad()
def rollout_rewards(generator: Any, reward: Any, seqs: torch.Tensor, start: int, rollouts: int,
                    rng: torch.Generator | None = None) -> torch.Tensor:
    """SeqGAN's action values Q(y_<t, y_t), (B, L): for each prefix y_1..t, the mean reward of `rollouts`
    Monte-Carlo completions sampled from the generator; the full sequence is scored once (t = L).

    `reward(seqs) -> (B,)` is the discriminator's probability that a sequence is real.
    """
    batch, length = seqs.shape
    q = torch.zeros(batch, length, device=seqs.device)
    for t in range(1, length):
        prefix = seqs[:, :t].repeat_interleave(rollouts, dim=0)
        done = sample(generator, batch * rollouts, length, start, prefix=prefix, generator=rng)
        q[:, t - 1] = reward(done).view(batch, rollouts).mean(1)
    q[:, length - 1] = reward(seqs)
    return q
