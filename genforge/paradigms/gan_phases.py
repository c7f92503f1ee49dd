"""The three phases every text GAN run shares: MLE pre-training (the engine), discriminator pre-training,
adversarial training per variant (SeqGAN / Gumbel), each in its own sub-folder of the run.

`genforge gan oracle` and `genforge gan text` differ only in where the real sequences come from and
how samples are scored; they call `mle_phase` and `variant_phase` with their own `evaluate`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from genforge.paradigms.adversarial import adversarial, pretrain_discriminator
from genforge.paradigms.config import GAN_VARIANTS, GanConfig
from genforge.paradigms.text_gan import CnnDiscriminator
from genforge.train.checkpoint import WEIGHTS
from genforge.train.config import TrainConfig
from genforge.train.data import mix_seed
from genforge.train.engine import checkpoint_exists, train
from genforge.train.objectives import ClmObjective

MLE_MARKER = "mle/checkpoints/latest"  # a text GAN run has started once its MLE phase wrote a checkpoint
WRITTEN = ("mle", *GAN_VARIANTS)  # the phase folders a redo of a finished run removes (see paradigms.runs)


def mle_started(out: Path) -> bool:
    return checkpoint_exists(Path(out) / "mle")


@dataclass
class SequenceBatches:
    """Random rows of fixed-length sequences as causal-LM batches: input = start + y_<L, labels = y.

    Rows are drawn from a generator seeded by (seed, step), so a batch is a pure function of the step
    (the engine's contract for exact resume).
    """

    rows: torch.Tensor
    batch_size: int
    micro_batches: int
    seed: int
    start: int

    def batch(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, "rows", step))
        index = torch.randint(0, len(self.rows), (self.micro_batches * self.batch_size,), generator=g)
        return as_clm(self.rows[index[micro * self.batch_size:(micro + 1) * self.batch_size]], self.start)

    def state_dict(self, step: int) -> dict[str, Any]:
        return {"next_step": step, "seed": self.seed, "rows": len(self.rows)}


def as_clm(rows: torch.Tensor, start: int) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.cat([torch.full_like(rows[:, :1], start), rows[:, :-1]], dim=1), "labels": rows}


def load_weights(model: Any, folder: Path) -> None:
    """Weights of a checkpoint folder into `model` (an HF decoder's tied head is restored by tie_weights)."""
    model.load_state_dict(load_file(Path(folder) / WEIGHTS), strict=not hasattr(model, "tie_weights"))
    if hasattr(model, "tie_weights"):
        model.tie_weights()


def mle_phase(generator: Any, train_rows: torch.Tensor, val_rows: torch.Tensor, cfg: GanConfig, start: int,
              out: Path) -> dict[str, Any]:
    """Maximum-likelihood pre-training in the one engine (out/mle); leaves the best checkpoint in `generator`."""
    steps = cfg.mle_steps
    every = max(1, steps // 5) if steps < 100 else steps // 10
    train_cfg = TrainConfig(out=out, max_steps=steps, batch_size=cfg.batch_size, seq_len=train_rows.shape[1],
                            lr=cfg.mle_lr, min_lr=cfg.mle_lr / 10, warmup_steps=min(100, steps // 10),
                            weight_decay=0.0, grad_clip=5.0, eval_every=every, save_every=every,
                            log_every=min(10, every), seed=cfg.seed, bf16=False,
                            resume=cfg.resume and checkpoint_exists(out))

    def eval_data():
        return (as_clm(val_rows[i:i + 500], start) for i in range(0, len(val_rows), 500))

    batches = SequenceBatches(train_rows, cfg.batch_size, 1, cfg.seed, start)
    result = train(generator, ClmObjective(), batches, train_cfg, out, eval_data=eval_data)
    load_weights(generator, out / "checkpoints" / "best")
    return {"val_nll": result.best.get("loss"), "best_step": result.best_step, "steps": result.steps,
            "seconds": round(result.seconds, 1)}


def variant_phase(variant: str, mle_generator: Any, real: torch.Tensor, vocab: int, cfg: GanConfig,
                  start: int, out: Path, evaluate: Callable[[Any], dict[str, float]], select: str
                  ) -> tuple[Any, dict[str, Any]]:
    """Discriminator pre-training + adversarial training of a copy of the MLE generator (out/<variant>).

    Returns the generator at its best evaluation (by `select`) and the phase's results.
    """
    torch.manual_seed(mix_seed(cfg.seed, variant))
    generator = copy.deepcopy(mle_generator)
    disc = CnnDiscriminator(vocab, real.shape[1])
    resuming = cfg.resume and checkpoint_exists(out)
    disc_losses = [] if resuming else pretrain_discriminator(generator, disc, real, cfg, start)
    result = adversarial(variant, generator, disc, real, cfg, out, start, lambda: evaluate(generator), select)
    best = out / "checkpoints" / "best"
    if (best / WEIGHTS).is_file():
        tensors = {k.removeprefix("generator."): v for k, v in load_file(best / WEIGHTS).items()
                   if k.startswith("generator.")}
        generator.load_state_dict(tensors, strict=not hasattr(generator, "tie_weights"))
        if hasattr(generator, "tie_weights"):
            generator.tie_weights()
    if disc_losses:
        result["disc_pretrain_loss"] = sum(disc_losses[-20:]) / len(disc_losses[-20:])
    return generator, result


def plot_curves(out: Path, runs: dict[str, Path], metric: str, baselines: dict[str, float]) -> Path:
    """`metric` over adversarial epochs for each variant (from its metrics.jsonl), baselines as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genforge.train.logs import read_metrics

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for name, run in runs.items():
        rows = [(r["step"], r[metric]) for r in read_metrics(run / "logs" / "metrics.jsonl")
                if r.get("kind") == "val" and metric in r]
        if rows:
            ax.plot(*zip(*rows, strict=True), "o-", markersize=3, label=name)
    for i, (name, value) in enumerate(baselines.items()):
        ax.axhline(value, linestyle="--", linewidth=1, color=f"C{i + len(runs)}", label=name)
    ax.set_xlabel("adversarial epoch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out / f"{metric}.png"
    fig.savefig(path)
    plt.close(fig)
    return path
