"""`genforge gan image`: a DCGAN (Radford et al. 2016) that really trains on a folder of images.

Generator: transposed convolutions with batch norm and ReLU up from a 4x4 map, tanh output.
Discriminator: strided convolutions with batch norm and LeakyReLU(0.2), one *logit* out. The loss is
the non-saturating GAN loss computed from logits (`BCEWithLogits`: stable, no sigmoid + log), Adam
(2e-4, betas 0.5/0.999), batch 64; conditional on the class optionally (one-hot appended to z, and as
constant maps to the discriminator's input). Losses go to metrics.jsonl/TensorBoard every
`log_every` steps, a grid of fixed-noise samples to logs/ every epoch, checkpoints/latest every epoch
(both networks, both optimisers, RNG, epoch and the settings: `--resume` continues exactly, and says which
flags it was given other values of). At the end a classifier
trained on the real images scores the generator (genforge.paradigms.frechet).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from genforge.artifacts import write_json, write_manifest
from genforge.config import check_training_memory
from genforge.errors import DataError
from genforge.models.presets import meta_params
from genforge.paradigms.config import ImageGanConfig
from genforge.paradigms.frechet import coverage, features_and_predictions, frechet_distance, train_classifier
from genforge.paradigms.images import load_image_folder, save_grid
from genforge.paradigms.runs import begin_run, check_run_folder, restore_optimizer
from genforge.train.checkpoint import (
    WEIGHTS,
    find_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from genforge.train.data import mix_seed
from genforge.train.logs import MetricsLog, note_resume, run_settings


def generator_net(latent: int, channels: int, size: int, width: int, classes: int = 0) -> nn.Sequential:
    ups = int(math.log2(size // 4))  # stride-2 layers after the 4x4 projection
    widths = [width * 2 ** i for i in reversed(range(ups))]
    layers: list[nn.Module] = [nn.ConvTranspose2d(latent + classes, widths[0], 4, 1, 0, bias=False),
                               nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
    for a, b in zip(widths, widths[1:], strict=False):
        layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
    layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def discriminator_net(channels: int, size: int, width: int, classes: int = 0) -> nn.Sequential:
    downs = int(math.log2(size // 4))
    widths = [width * 2 ** i for i in range(downs)]
    layers: list[nn.Module] = [nn.Conv2d(channels + classes, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
    for a, b in zip(widths, widths[1:], strict=False):
        layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, True)]
    layers += [nn.Conv2d(widths[-1], 1, 4, 1, 0), nn.Flatten()]
    return nn.Sequential(*layers)


def init_weights(module: nn.Module) -> None:
    """DCGAN's initialisation: conv weights N(0, 0.02), batch-norm scales N(1, 0.02), biases 0."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def generate(g: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, classes: int) -> torch.Tensor:
    if labels is not None:
        z = torch.cat([z, F.one_hot(labels, classes).float()], dim=1)
    return g(z[:, :, None, None])


def discriminate(d: nn.Module, x: torch.Tensor, labels: torch.Tensor | None, classes: int) -> torch.Tensor:
    if labels is not None:
        maps = F.one_hot(labels, classes).float()[:, :, None, None].expand(-1, -1, *x.shape[2:])
        x = torch.cat([x, maps], dim=1)
    return d(x).squeeze(1)


def discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """-log D(x) - log(1 - D(G(z))), from logits."""
    return (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
            + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))


def generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating: -log D(G(z)) (strong gradients while D still wins), from logits."""
    return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))


def split(n: int, seed: int, held_out: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(seed, "split")))
    k = max(1, int(n * held_out))
    return order[k:], order[:k]


def gan_image(cfg: ImageGanConfig) -> dict[str, Any]:
    """Train the DCGAN; return the evaluation {fid_classifier, fid_real_floor, coverage, ...}."""
    latest = cfg.out / "checkpoints" / "latest"
    started_run = find_checkpoint(latest) is not None
    check_run_folder(cfg.out, "gan.image", resume=cfg.resume, started=started_run, marker="checkpoints/latest")
    x, y, class_names = load_image_folder(cfg.images, cfg.image_size, cfg.channels)
    if len(x) < 10:
        raise DataError(f"{cfg.images} holds {len(x)} images; need at least 10 (a GAN learns from hundreds)")
    k = len(class_names) if cfg.conditional else 0
    check_training_memory(lambda: meta_params(generator_net, cfg.latent_size, x.shape[1], cfg.image_size, cfg.width, k)
                          + meta_params(discriminator_net, x.shape[1], cfg.image_size, cfg.width, k),
                          cfg, "latent_size", "width")
    started = begin_run(cfg.out, "gan.image", resume=cfg.resume, started=started_run, marker="checkpoints/latest",
                        written=("checkpoints", "logs"))
    train_idx, held_idx = split(len(x), cfg.seed)
    x_train, y_train = x[train_idx], y[train_idx]
    torch.manual_seed(cfg.seed)
    g = generator_net(cfg.latent_size, x.shape[1], cfg.image_size, cfg.width, k)
    d = discriminator_net(x.shape[1], cfg.image_size, cfg.width, k)
    g.apply(init_weights)
    d.apply(init_weights)
    both = nn.ModuleDict({"generator": g, "discriminator": d})
    g_opt = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    d_opt = torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    state = {"epoch": 0, "step": 0, "elapsed": 0.0}
    settings = run_settings(cfg)
    saved = load_checkpoint(latest, both) if cfg.resume else None
    if saved is not None:
        restore_optimizer(g_opt, saved["g_opt"], lr=cfg.lr, betas=(cfg.beta1, 0.999))
        restore_optimizer(d_opt, saved["d_opt"], lr=cfg.lr, betas=(cfg.beta1, 0.999))
        set_rng_state(saved["rng"])
        state.update({key: saved[key] for key in state})
    log = MetricsLog(cfg.out / "logs", resume_step=state["step"] if cfg.resume else None)
    if saved is not None:
        note_resume(log, state["step"], saved, settings, f"epoch {state['epoch']} (step {state['step']})")
    fixed = torch.randn(64, cfg.latent_size, generator=torch.Generator().manual_seed(cfg.seed))
    fixed_labels = torch.arange(64) % max(1, k) if k else None
    t0 = time.perf_counter() - state["elapsed"]
    bar = tqdm(total=cfg.epochs, initial=state["epoch"], desc="gan image", unit="epoch", dynamic_ncols=True)
    for epoch in range(state["epoch"], cfg.epochs):
        if cfg.max_minutes and time.perf_counter() - t0 >= cfg.max_minutes * 60:
            break
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(mix_seed(cfg.seed, epoch)))
        for idx in order.split(cfg.batch_size):
            real, labels = x_train[idx], (y_train[idx] if k else None)
            fake = generate(g, torch.randn(len(idx), cfg.latent_size), labels, k)
            d_loss = discriminator_loss(discriminate(d, real, labels, k), discriminate(d, fake.detach(), labels, k))
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            g_loss = generator_loss(discriminate(d, fake, labels, k))
            g_opt.zero_grad(set_to_none=True)
            g_loss.backward()
            g_opt.step()
            state["step"] += 1
            if state["step"] % cfg.log_every == 0:
                log.write(state["step"], "train", {"d_loss": d_loss.item(), "g_loss": g_loss.item(), "epoch": epoch})
                bar.set_postfix(d=f"{d_loss.item():.3f}", g=f"{g_loss.item():.3f}")
        state["epoch"], state["elapsed"] = epoch + 1, time.perf_counter() - t0
        g.eval()
        with torch.no_grad():
            save_grid(generate(g, fixed, fixed_labels, k), cfg.out / "logs" / f"epoch_{epoch + 1:03d}.png")
        g.train()
        save_checkpoint(latest, both, {**state, "settings": settings, "g_opt": g_opt.state_dict(),
                                       "d_opt": d_opt.state_dict(), "rng": rng_state()})
        bar.update(1)
    bar.close()
    log.close()
    metrics = evaluate(g, x_train, y_train, x[held_idx], y[held_idx], len(class_names), k, cfg)
    metrics.update(epochs=state["epoch"], steps=state["step"], train_seconds=round(state["elapsed"], 1))
    g.eval()
    with torch.no_grad():
        save_grid(generate(g, fixed, fixed_labels, k), cfg.out / "samples.png")
    save_checkpoint(cfg.out / "generator", g)
    info = {"latent_size": cfg.latent_size, "channels": x.shape[1], "image_size": cfg.image_size,
            "width": cfg.width, "classes": class_names, "conditional": cfg.conditional, "weights": f"generator/{WEIGHTS}"}
    write_json(cfg.out / "gan.json", info)
    write_json(cfg.out / "results.json", metrics)
    write_manifest(cfg.out, "gan.image", cfg, started=started, metrics=metrics,
                   extra={"images": {"folder": str(cfg.images), "count": len(x), "classes": class_names}})
    print_summary(metrics, cfg)
    return metrics


@torch.no_grad()
def evaluate(g: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_held: torch.Tensor,
             y_held: torch.Tensor, classes: int, k: int, cfg: ImageGanConfig) -> dict[str, Any]:
    """Classifier-space Fréchet distance of generated vs held-out real images, the real-vs-real floor, coverage.

    The floor scores as many real training images as the distance scores generated ones, against the same held-out
    images: a Fréchet distance estimated from n samples is biased upwards by about 1/n, so with --eval-samples below
    the held-out count a floor from as many training images as held-out ones sat far under what a perfect generator
    scores.
    """
    with torch.enable_grad():
        net = train_classifier(x_train, y_train, classes, cfg.classifier_epochs, cfg.seed)
    n = len(x_held)
    gen = torch.Generator().manual_seed(mix_seed(cfg.seed, "eval"))
    labels = torch.randint(0, classes, (cfg.eval_samples,), generator=gen) if k else None
    g.eval()
    fake = torch.cat([generate(g, z, lab, k) for z, lab in zip(
        torch.randn(cfg.eval_samples, cfg.latent_size, generator=gen).split(256),
        labels.split(256) if k else [None] * math.ceil(cfg.eval_samples / 256), strict=True)])
    scored = min(n, len(fake))  # generated (and, for the floor, real training) images each distance scores
    f_held, p_held = features_and_predictions(net, x_held)
    f_train, _ = features_and_predictions(net, x_train[torch.randperm(len(x_train), generator=gen)[:scored]])
    f_fake, p_fake = features_and_predictions(net, fake)
    metrics = {"fid_classifier": frechet_distance(f_fake[:scored], f_held),
               "fid_real_floor": frechet_distance(f_train, f_held),
               "classifier_accuracy": float((p_held == y_held.numpy()).mean()),
               "coverage": coverage(p_fake, classes), "real_images": len(x_train) + n, "held_out": n}
    if k:
        metrics["conditional_accuracy"] = float((p_fake == labels.numpy()).mean())
    return metrics


def print_summary(metrics: dict[str, Any], cfg: ImageGanConfig) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"gan image -> {cfg.out}", show_header=False)
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console(stderr=True).print(table)
