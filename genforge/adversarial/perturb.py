"""Adversarial training in embedding space: FGM, PGD, FreeLB and VAT as one wrapper over any objective.

`wrap_adversarial(objective, cfg)` returns an objective whose `train_step(forward, batch, scale)` the
engine calls instead of `loss` + `backward`; `loss` itself (used for evaluation) is the wrapped one's.
The perturbation is added to the output of the model's input-embedding module by a forward hook that
lives for one forward pass only. The weights are never modified, so nothing can leak into a checkpoint,
and no gradient backup/restore is needed: ascent steps take their gradient with `torch.autograd.grad`
with respect to the perturbation alone, which leaves every parameter's `.grad` untouched. Only the passes
a method trains on call `backward` (each loss times the engine's `scale`), so the parameter gradients are
exactly the published sum or average, added to whatever earlier micro-batches accumulated.

Perturbations are normalised per example: L2 over that example's real (non-padding) token embeddings.
With `relative`, eps (and the pgd/freelb step alpha) are multiples of the mean norm of the model's token
embeddings, measured at every step: an absolute radius that suits a pretrained encoder (MiniLM: ~1.07 per
token) swamps the N(0, 0.02) embeddings of a model trained from scratch (~0.32 at 256 dimensions).
- fgm (Miyato et al. 2017): L(x) + L(x + r), r = eps * g / ||g||, g = dL/dx at the clean point.
- pgd (Madry et al. 2018): K ascent steps delta <- Proj_eps(delta + alpha * g / ||g||) from 0 (the first
  with the clean pass's gradient), then L(x) + L(x + delta_K): the clean term keeps clean accuracy.
- freelb (Zhu et al. 2020): K ascent steps from a random start of size alpha; every step also trains,
  and the parameter gradients of the K losses are averaged.
- vat (Miyato et al. 2018; SMART, Jiang et al. 2020): L(x) + alpha * KL(p(x) || p(x + r)), r of size eps
  along the direction that changes the prediction most (K power iterations). The smoothness term needs
  no labels, so it also regularises language-model training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from genforge.errors import ConfigError
from genforge.train.objectives import IGNORE, embeddings

VAT_XI = 0.1  # size of the power-iteration probe, as a fraction of eps (a tiny one drowns in bf16 noise)

MakeDelta = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (embedding output, token mask) -> shift
Size = float | torch.Tensor  # a radius or step; a 0-dim tensor in embedding units (--adv-relative)


def input_embeddings(model: Any) -> torch.nn.Module:
    """The token-embedding module of an HF model, a genforge Classifier (its body), a Wrapped LM, or DDP."""
    found = embeddings(model, "input")
    if found is None:
        raise ConfigError(f"adversarial training perturbs the input embeddings, and {type(model).__name__} "
                          "exposes none (get_input_embeddings); use --adversarial none")
    return found


def plain(model: Any) -> Any:
    """The module under DDP: ascent-only passes have no backward, so they must bypass DDP's reducer."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def token_mask(batch: dict[str, torch.Tensor], output: torch.Tensor) -> torch.Tensor:
    """[B, T, 1]: 1 on real tokens, 0 on padding (all ones when the batch has no attention mask)."""
    mask = batch.get("attention_mask")
    if mask is None or mask.shape != output.shape[:2]:
        return torch.ones(*output.shape[:2], 1, dtype=output.dtype, device=output.device)
    return mask.to(output.dtype).unsqueeze(-1)


def example_norm(x: torch.Tensor) -> torch.Tensor:
    """L2 norm of each example's slice ([B, 1, 1]), floored so that directions of zero stay finite."""
    return x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))


def unit(g: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """g restricted to real tokens and scaled to norm 1 per example."""
    g = g * mask
    return g / example_norm(g)


def project(delta: torch.Tensor, epsilon: Size) -> torch.Tensor:
    """Projection onto the eps-ball, per example (a delta already inside is unchanged)."""
    return delta * (epsilon / example_norm(delta)).clamp(max=1.0)


def leaf(delta: torch.Tensor) -> MakeDelta:
    """A fresh leaf copy of `delta` that collects its own gradient."""
    return lambda output, mask: delta.detach().clone().requires_grad_(True)


def fixed(delta: torch.Tensor) -> MakeDelta:
    return lambda output, mask: delta.detach()


def zero(requires_grad: bool) -> MakeDelta:
    return lambda output, mask: torch.zeros_like(output, requires_grad=requires_grad)


@dataclass
class Pass:
    loss: torch.Tensor
    delta: torch.Tensor  # the shift that was added to the embeddings
    mask: torch.Tensor
    logits: torch.Tensor | None


def shifted_pass(objective: Any, model: Any, batch: dict[str, torch.Tensor], make_delta: MakeDelta,
                 logits: bool = False) -> Pass:
    """`objective.loss(model, batch)` with the input embeddings shifted by `make_delta(output, mask)`."""
    seen: dict[str, torch.Tensor] = {}

    def shift(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
        seen["mask"] = mask = token_mask(batch, output)
        seen["delta"] = delta = make_delta(output, mask)
        return output + delta

    def grab(module: Any, args: Any, output: Any) -> None:
        seen["logits"] = output if isinstance(output, torch.Tensor) else output.logits

    handles = [input_embeddings(model).register_forward_hook(shift)]
    if logits:
        handles.append(model.register_forward_hook(grab))
    try:
        loss, _ = objective.loss(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    if "delta" not in seen:
        raise ConfigError(f"{type(model).__name__} did not use its input embeddings in the forward pass; "
                          "adversarial training needs them: use --adversarial none")
    return Pass(loss, seen["delta"], seen["mask"], seen.get("logits"))


def kl_weights(batch: dict[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
    """Which positions the smoothness term counts: predicted tokens (LM), real tokens, or every example."""
    if logits.dim() == 2:
        return torch.ones(logits.shape[0], device=logits.device)
    labels, mask = batch.get("labels"), batch.get("attention_mask")
    if labels is not None and labels.shape == logits.shape[:2]:
        return (labels != IGNORE).float()
    if mask is not None and mask.shape == logits.shape[:2]:
        return mask.float()
    return torch.ones(logits.shape[:2], device=logits.device)


def smooth_kl(target: torch.Tensor, logits: torch.Tensor, weights: torch.Tensor,
              multi_label: bool = False) -> torch.Tensor:
    """Mean KL(p(target) || p(logits)) over the weighted positions, in fp32. p is the softmax over the last
    dimension or, for a multi-label classifier, a product of independent sigmoids: its KL is the sum of the
    labels' Bernoulli KLs (a softmax over sigmoid logits would miss a shift of every label alike, and is
    constant for one label)."""
    target, logits = target.float(), logits.float()
    if multi_label:
        p = torch.sigmoid(target)
        kl = (p * (F.logsigmoid(target) - F.logsigmoid(logits))
              + (1 - p) * (F.logsigmoid(-target) - F.logsigmoid(-logits))).sum(-1)
    else:
        p_log, q_log = F.log_softmax(target, -1), F.log_softmax(logits, -1)
        kl = (p_log.exp() * (p_log - q_log)).sum(-1)
    return (kl * weights).sum() / weights.sum().clamp_min(1)


@dataclass
class AdversarialObjective:
    """`base` trained under embedding perturbations by `method`; evaluation uses `base.loss` unchanged."""

    base: Any
    method: str
    epsilon: Size
    alpha: Size
    steps: int
    relative: bool = False

    @property
    def name(self) -> str:
        return f"{self.base.name}+{self.method}"

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.base.loss(model, batch)

    def count(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The base objective's (the engine's micro-batch weights), None if it has none."""
        count = getattr(self.base, "count", None)
        return count(batch) if count is not None else None

    def train_step(self, forward: Any, batch: dict[str, torch.Tensor], scale: float) -> torch.Tensor:
        """Run the method's passes, backward on the ones it trains on (x scale); return the logged loss."""
        adv = self.in_embedding_units(forward) if self.relative else self
        return METHODS[self.method](adv, forward, batch, scale)[0]

    def in_embedding_units(self, model: Any) -> AdversarialObjective:
        """A copy with absolute sizes: eps (and alpha, when it is a step size) times the mean token-embedding norm."""
        weight = getattr(input_embeddings(model), "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise ConfigError(f"--adv-relative needs the embedding matrix, and {type(model).__name__}'s input "
                              "embeddings have no weight; give an absolute --adv-epsilon instead")
        with torch.no_grad():  # a tensor, not .item(): reading it back would wait for the device at every step
            norm = weight.float().norm(dim=1).mean()
        alpha = self.alpha if self.method == "vat" else self.alpha * norm
        return replace(self, epsilon=self.epsilon * norm, alpha=alpha, relative=False)

    def run(self, model: Any, batch: dict[str, torch.Tensor], make_delta: MakeDelta, logits: bool = False) -> Pass:
        return shifted_pass(self.base, model, batch, make_delta, logits)


# Each method: (objective, model, batch, scale) -> (loss to log, the last perturbation trained on).

def fgm(adv: AdversarialObjective, model: Any, batch: dict, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    clean = adv.run(model, batch, zero(requires_grad=True))
    (clean.loss * scale).backward()
    r = adv.epsilon * unit(clean.delta.grad, clean.mask)
    (adv.run(model, batch, fixed(r)).loss * scale).backward()
    return clean.loss.detach(), r


def pgd(adv: AdversarialObjective, model: Any, batch: dict, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    clean = adv.run(model, batch, zero(requires_grad=True))
    (clean.loss * scale).backward()
    grad, mask = clean.delta.grad, clean.mask
    delta = torch.zeros_like(grad)
    for step in range(adv.steps):
        delta = project(delta + adv.alpha * unit(grad, mask), adv.epsilon)
        if step < adv.steps - 1:
            ascent = adv.run(plain(model), batch, leaf(delta))
            (grad,) = torch.autograd.grad(ascent.loss, ascent.delta)
    (adv.run(model, batch, fixed(delta)).loss * scale).backward()
    return clean.loss.detach(), delta


def random_start(size: Size, epsilon: Size) -> MakeDelta:
    """FreeLB's start: uniform noise on real tokens, size / sqrt(tokens x dim) per element, inside the ball."""

    def make(output: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            dims = (mask.flatten(1).sum(1) * output.shape[-1]).clamp_min(1).view(-1, 1, 1)
            noise = (torch.rand_like(output) * 2 - 1) * mask * size / dims.sqrt()
            return project(noise, epsilon).requires_grad_(True)

    return make


def freelb(adv: AdversarialObjective, model: Any, batch: dict, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    make, total = random_start(adv.alpha, adv.epsilon), 0.0
    for step in range(adv.steps):
        p = adv.run(model, batch, make)
        (p.loss * (scale / adv.steps)).backward()
        total = total + p.loss.detach() / adv.steps
        delta = p.delta.detach()
        if step < adv.steps - 1:
            make = leaf(project(delta + adv.alpha * unit(p.delta.grad, p.mask), adv.epsilon))
    return total, delta


def vat(adv: AdversarialObjective, model: Any, batch: dict, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    # One backward covers the clean and the perturbed graphs: only the last forward goes through DDP.
    clean = adv.run(plain(model), batch, zero(requires_grad=False), logits=True)
    target = clean.logits.detach()
    weights, multi_label = kl_weights(batch, target), bool(getattr(adv.base, "multi_label", False))
    direction = torch.randn_like(clean.delta)
    for _ in range(adv.steps):  # power iteration towards the most sensitive direction
        probe = adv.run(plain(model), batch, leaf(VAT_XI * adv.epsilon * unit(direction, clean.mask)), logits=True)
        (direction,) = torch.autograd.grad(smooth_kl(target, probe.logits, weights, multi_label), probe.delta)
    r = adv.epsilon * unit(direction, clean.mask)
    smooth = smooth_kl(target, adv.run(model, batch, fixed(r), logits=True).logits, weights, multi_label)
    ((clean.loss + adv.alpha * smooth) * scale).backward()
    return clean.loss.detach(), r


METHODS = {"fgm": fgm, "pgd": pgd, "freelb": freelb, "vat": vat}


def wrap_adversarial(objective: Any, cfg: Any) -> Any:
    """`objective` trained adversarially as `cfg.adversarial` says (TrainConfig fields); unchanged for none."""
    method = getattr(cfg, "adversarial", "none")
    if method == "none":
        return objective
    if method not in METHODS:
        raise ConfigError(f"--adversarial must be one of none, {', '.join(METHODS)}; got {method!r}")
    return AdversarialObjective(objective, method, cfg.adv_epsilon, cfg.adv_alpha, cfg.adv_steps,
                                cfg.adv_relative)
