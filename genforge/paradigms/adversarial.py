"""The adversarial phase of the text GANs: one short loop with two optimisers, engine conventions kept.

MLE pre-training runs in the one engine (it is a plain loss -> step loop); this phase alternates a
generator step (SeqGAN policy gradient or RelGAN Gumbel) with `disc_steps` discriminator steps, which
the engine's one-optimiser step cannot express. It keeps the engine's conventions: metrics.jsonl +
TensorBoard (`MetricsLog`), checkpoints/latest written atomically with both networks, both
optimisers, the RNG state, the epoch and the settings, so `--resume` continues exactly and says which
settings changed; checkpoints/best by the `select` metric of `evaluate()` (lower is better).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from genforge.paradigms.config import GanConfig
from genforge.paradigms.runs import restore_optimizer
from genforge.paradigms.sequence import rollout_rewards, sample
from genforge.paradigms.text_gan import (
    discriminator_loss,
    gumbel_beta,
    gumbel_sample,
    policy_gradient_loss,
    rsgan_discriminator_loss,
    rsgan_generator_loss,
)
from genforge.train.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from genforge.train.data import mix_seed
from genforge.train.logs import MetricsLog, note_resume, run_settings


def real_batch(real: torch.Tensor, batch_size: int, seed: int, *key: Any) -> torch.Tensor:
    """Random rows of the real sequences, a pure function of (seed, key): resumed runs see the same data."""
    g = torch.Generator().manual_seed(mix_seed(seed, *key))
    return real[torch.randint(0, len(real), (batch_size,), generator=g)]


def pretrain_discriminator(generator: Any, disc: nn.Module, real: torch.Tensor, cfg: GanConfig, start: int
                           ) -> list[float]:
    """SeqGAN's discriminator pre-training: real rows vs fresh generator samples; returns the losses."""
    optimizer = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr)
    losses = []
    for step in tqdm(range(cfg.disc_pretrain_steps), desc="discriminator", unit="step", dynamic_ncols=True):
        fake = sample(generator, cfg.batch_size, real.shape[1], start)
        loss = discriminator_loss(disc, real_batch(real, cfg.batch_size, cfg.seed, "disc", step), fake)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def adversarial_step(variant: str, generator: Any, disc: nn.Module, g_opt: torch.optim.Optimizer,
                     d_opt: torch.optim.Optimizer, real: torch.Tensor, cfg: GanConfig, start: int,
                     epoch: int) -> dict[str, float]:
    """One adversarial epoch: a generator step, then `cfg.disc_steps` discriminator steps."""
    length, b = real.shape[1], cfg.batch_size
    beta = gumbel_beta(epoch, cfg.adv_epochs, cfg.gumbel_temperature)
    if variant == "seqgan":
        fake = sample(generator, b, length, start)
        disc.eval()  # rewards as SeqGAN's get_reward scores them: without dropout, one sequence one reward
        try:
            rewards = rollout_rewards(generator, lambda s: torch.sigmoid(disc(s)), fake, start, cfg.rollouts)
        finally:
            disc.train()
        g_loss = policy_gradient_loss(generator, fake, rewards, start)
        extra = {"reward": rewards[:, -1].mean().item()}
    else:
        _, soft = gumbel_sample(generator, b, length, start, beta)
        g_loss = rsgan_generator_loss(disc, real_batch(real, b, cfg.seed, "gen", epoch), soft)
        extra = {"beta": beta}
    g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    torch.nn.utils.clip_grad_norm_(generator.parameters(), 5.0)
    g_opt.step()
    d_losses = []
    for k in range(cfg.disc_steps):
        real_rows = real_batch(real, b, cfg.seed, "adv-disc", epoch, k)
        if variant == "seqgan":
            d_loss = discriminator_loss(disc, real_rows, sample(generator, b, length, start))
        else:
            with torch.no_grad():
                _, soft = gumbel_sample(generator, b, length, start, beta)
            d_loss = rsgan_discriminator_loss(disc, real_rows, soft)
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        d_losses.append(d_loss.item())
    return {"g_loss": g_loss.item(), "d_loss": sum(d_losses) / len(d_losses), **extra}


def adversarial(variant: str, generator: Any, disc: nn.Module, real: torch.Tensor, cfg: GanConfig,
                run_dir: Path, start: int, evaluate: Callable[[], dict[str, float]], select: str
                ) -> dict[str, Any]:
    """Train `generator` against `disc` for `cfg.adv_epochs` epochs; return {"best", "last", "epochs"}.

    Writes run_dir/logs (metrics.jsonl, TensorBoard) and run_dir/checkpoints/{latest,best}; with
    `cfg.resume` and a checkpoint present it continues from there.
    """
    run_dir = Path(run_dir)
    latest, best_dir = run_dir / "checkpoints" / "latest", run_dir / "checkpoints" / "best"
    both = nn.ModuleDict({"generator": generator, "discriminator": disc})
    g_opt = torch.optim.Adam(generator.parameters(), lr=cfg.gen_lr, betas=(0.9, 0.999))
    d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=(0.9, 0.999))
    state: dict[str, Any] = {"epoch": 0, "best_val": math.inf, "best": {}, "elapsed": 0.0}
    settings = run_settings(cfg)
    saved = load_checkpoint(latest, both) if cfg.resume and find_checkpoint(latest) is not None else None
    if saved is not None:
        restore_optimizer(g_opt, saved["g_opt"], lr=cfg.gen_lr)
        restore_optimizer(d_opt, saved["d_opt"], lr=cfg.disc_lr)
        set_rng_state(saved["rng"])
        state.update({k: saved[k] for k in state})
    log = MetricsLog(run_dir / "logs", resume_step=state["epoch"] if saved is not None else None)
    if saved is not None:
        note_resume(log, state["epoch"], saved, settings, f"{variant} epoch {state['epoch']}")

    def save(folder: Path, with_state: bool) -> None:
        trainer = {**state, "settings": settings, "g_opt": g_opt.state_dict(), "d_opt": d_opt.state_dict(),
                   "rng": rng_state(), "step": state["epoch"]} if with_state else None
        save_checkpoint(folder, both, trainer)

    def check(epoch: int) -> dict[str, float]:
        metrics = evaluate()
        log.write(epoch, "val", metrics)
        if metrics[select] < state["best_val"]:
            state.update(best_val=metrics[select], best={**metrics, "epoch": epoch})
            save(best_dir, with_state=False)
        return metrics

    last = check(0) if state["epoch"] == 0 else {}
    t0 = time.perf_counter() - state["elapsed"]
    bar = tqdm(total=cfg.adv_epochs, initial=state["epoch"], desc=variant, unit="epoch", dynamic_ncols=True)
    for epoch in range(state["epoch"], cfg.adv_epochs):
        if cfg.max_minutes and time.perf_counter() - t0 >= cfg.max_minutes * 60:
            break
        record = adversarial_step(variant, generator, disc, g_opt, d_opt, real, cfg, start, epoch)
        state["epoch"], state["elapsed"] = epoch + 1, time.perf_counter() - t0
        log.write(state["epoch"], "train", {**record, "elapsed_s": state["elapsed"]})
        bar.update(1)
        bar.set_postfix(g=f"{record['g_loss']:.3f}", d=f"{record['d_loss']:.3f}")
        if state["epoch"] % cfg.eval_every == 0:
            last = check(state["epoch"])
            bar.set_postfix({k: f"{v:.3f}" for k, v in last.items()})
            save(latest, with_state=True)
    bar.close()
    if not last or state["epoch"] % cfg.eval_every:
        last = check(state["epoch"])
    save(latest, with_state=True)
    log.close()
    return {"best": state["best"], "last": last, "epochs": state["epoch"]}
