"""Text GAN pieces: the CNN discriminator and the losses of SeqGAN (policy gradient) and RelGAN (Gumbel).

Tokens are discrete, so the discriminator's gradient cannot reach the generator through a sample.
SeqGAN (Yu et al. 2017) treats generation as a policy and uses the discriminator's probability
"real" of Monte-Carlo completions as the reward of each token (REINFORCE). RelGAN (Nie et al. 2019)
instead relaxes each sampled token into a Gumbel-softmax vector whose inverse temperature is annealed
upwards, so the discriminator reads (almost) one-hot vectors and its gradient flows into the logits;
it trains with the relativistic standard loss (RSGAN). Each loss function touches only the network it
trains: the generator losses detach nothing the discriminator needs and vice versa, and the loop
steps only the matching optimiser.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genforge.paradigms.sequence import next_logits, token_log_probs


class CnnDiscriminator(nn.Module):
    """SeqGAN's text CNN: embeddings -> parallel convolutions of several widths -> max-pool -> highway -> logit.

    Takes token ids (B, L) or, for the Gumbel variant, (relaxed) one-hot vectors (B, L, V) that are
    multiplied into the same embedding table, so real and generated text share every parameter.
    """

    def __init__(self, vocab_size: int, length: int, embed_size: int = 64, filters: int = 64,
                 dropout: float = 0.25):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_size)
        widths = [w for w in (1, 2, 3, 4, 5, 8, 10, 15, 20) if w <= length]
        self.convs = nn.ModuleList(nn.Conv1d(embed_size, filters, w) for w in widths)
        features = filters * len(widths)
        self.highway = nn.Linear(features, 2 * features)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embed(x) if x.dtype == torch.long else x @ self.embed.weight
        e = e.transpose(1, 2)  # (B, E, L)
        h = torch.cat([F.relu(conv(e)).amax(dim=2) for conv in self.convs], dim=1)
        transform, gate = self.highway(h).chunk(2, dim=1)
        gate = torch.sigmoid(gate)
        h = gate * F.relu(transform) + (1 - gate) * h
        return self.out(self.dropout(h)).squeeze(1)


def discriminator_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy from logits: real -> 1, generated -> 0 (fake detached: the generator is not trained)."""
    real_logit, fake_logit = disc(real), disc(fake.detach())
    return (F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
            + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)))


def policy_gradient_loss(generator: Any, seqs: torch.Tensor, rewards: torch.Tensor, start: int) -> torch.Tensor:
    """REINFORCE: -mean_t log G(y_t | y_<t) * Q_t. Rewards are constants (no gradient into the discriminator)."""
    return -(token_log_probs(generator, seqs, start) * rewards.detach()).mean()


def gumbel_sample(generator: Any, n: int, length: int, start: int, beta: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Relaxed samples: (tokens (n, L), soft one-hots (n, L, V)) with gradients into the generator.

    Each step adds Gumbel noise g to the logits o; the token fed to the next step is argmax(o + g) (an
    exact sample of softmax(o)), the discriminator reads softmax(beta * (o + g)), which tends to the
    one-hot of that token as beta grows.
    """
    device = next(generator.parameters()).device
    inputs = torch.full((n, 1), start, dtype=torch.long, device=device)
    state, soft = None, []
    for _ in range(length):
        logits, state = next_logits(generator, inputs, state)
        u = torch.rand_like(logits, dtype=torch.float32).clamp_(1e-10, 1 - 1e-10)
        perturbed = logits.float() - torch.log(-torch.log(u))
        soft.append(F.softmax(beta * perturbed, dim=-1))
        inputs = torch.cat([inputs, perturbed.argmax(-1, keepdim=True)], dim=1)
    return inputs[:, 1:], torch.stack(soft, dim=1)


def rsgan_generator_loss(disc: nn.Module, real: torch.Tensor, soft_fake: torch.Tensor) -> torch.Tensor:
    """Relativistic standard GAN, generator side: generated text should look more real than real text."""
    diff = disc(soft_fake) - disc(real)
    return F.binary_cross_entropy_with_logits(diff, torch.ones_like(diff))


def rsgan_discriminator_loss(disc: nn.Module, real: torch.Tensor, soft_fake: torch.Tensor) -> torch.Tensor:
    """Relativistic standard GAN, discriminator side (generated vectors detached)."""
    diff = disc(real) - disc(soft_fake.detach())
    return F.binary_cross_entropy_with_logits(diff, torch.ones_like(diff))


def gumbel_beta(epoch: int, epochs: int, beta_max: float) -> float:
    """RelGAN's exponential schedule of the inverse temperature: 1 at the start, beta_max at the end."""
    return beta_max ** (epoch / max(1, epochs))
