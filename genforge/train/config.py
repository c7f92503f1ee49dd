"""Configs of the training stages: the flags every training command shares, pretraining, evaluation.

Light on purpose (no torch import): the CLI builds its flags from these dataclasses and `genforge --help`
must stay instant. `TrainConfig` holds the knobs of the one training loop (`genforge.train.engine`);
each training stage (pretrain now, finetune later) extends it with its own inputs, so the same flags
mean the same thing on every training command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genforge.config import Config, field
from genforge.errors import ConfigError

PRESETS = ("tiny", "small", "base", "custom")
OBJECTIVES = ("clm", "mlm")
ADVERSARIAL = ("none", "fgm", "pgd", "freelb", "vat")  # embedding-space training, genforge.adversarial.perturb
MAX_ADV_STEPS = 32
# the methods each --adv-* flag acts in (fgm takes one step of size --adv-epsilon; vat's --adv-alpha weighs its loss)
WITH_EPSILON = ("adversarial", "fgm", "pgd", "freelb", "vat")
WITH_ALPHA_AND_STEPS = ("adversarial", "pgd", "freelb", "vat")


@dataclass(kw_only=True)
class TrainConfig(Config):
    """The knobs of the training loop, shared by every training command."""

    out: Path = field(help="output run folder (an HF model folder + checkpoints/ + logs/ when done)")
    max_steps: int = field(1000, help="stop after this many optimizer steps")
    max_minutes: float = field(0.0, help="stop after this much wall-clock time (0 = no limit); the LR "
                                         "cosine then ends at the time limit")
    batch_size: int = field(8, help="sequences per micro-batch on each process")
    grad_accum: int = field(1, help="micro-batches per optimizer step, summed over all processes "
                                    "(global batch = batch-size x grad-accum whatever the process count)")
    seq_len: int = field(256, help="tokens per training sequence")
    lr: float = field(1e-3, help="peak learning rate")
    min_lr: float = field(1e-4, help="learning rate at the end of the cosine decay")
    warmup_steps: int = field(100, help="linear warm-up steps")
    weight_decay: float = field(0.1, help="decoupled weight decay of AdamW (matrices only)")
    beta2: float = field(0.95, help="AdamW beta2")
    grad_clip: float = field(1.0, help="clip the global gradient norm to this (0 = off)")
    eval_every: int = field(250, help="evaluate on the validation split every N steps (0 = only at the end)")
    eval_batches: int = field(20, help="validation batches per evaluation (0 = the whole split)")
    save_every: int = field(500, help="write checkpoints/latest every N steps (0 = only at the end)")
    log_every: int = field(10, help="log training loss every N steps")
    patience: int = field(0, help="stop after N evaluations without a better val loss (0 = never)")
    seed: int = field(1337, help="random seed (model init, data order, masking)")
    resume: bool = field(False, help="continue the run in --out from checkpoints/latest")
    bf16: bool = field(True, help="bf16 autocast where the hardware supports it (fp32 master weights)")
    compile: bool = field(False, help="torch.compile the model (slow start, faster steps)")
    activation_checkpointing: bool = field(False, help="recompute activations in backward to save memory")
    fsdp: bool = field(False, help="with several processes: shard parameters, gradients and optimizer state "
                                   "(FSDP2) instead of replicating them (DDP), for models too big for one device")
    adversarial: str = field("none", help="adversarial training in embedding space: fgm (Miyato 2017), pgd "
                                          "(Madry 2018), freelb (Zhu 2020) or vat (KL smoothness, no labels "
                                          "needed)", choices=ADVERSARIAL)
    adv_epsilon: float = field(1.0, help="radius of the perturbation: L2 norm over each example's token "
                                         "embeddings", needs=WITH_EPSILON)
    adv_alpha: float = field(0.3, help="pgd/freelb: ascent step size (freelb: also the random start's size); "
                                       "vat: weight of the smoothness loss", needs=WITH_ALPHA_AND_STEPS)
    adv_steps: int = field(2, help="pgd/freelb: ascent steps; vat: power iterations", needs=WITH_ALPHA_AND_STEPS)
    adv_relative: bool = field(False, help="measure --adv-epsilon (and the pgd/freelb step --adv-alpha) in units "
                                           "of the model's mean token-embedding norm, so one setting fits a "
                                           "pretrained model and one trained from scratch (its embeddings are "
                                           "~3x smaller)", needs=WITH_EPSILON)

    def check(self) -> None:
        positive = ("max_steps", "batch_size", "grad_accum", "seq_len")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.adv_steps > MAX_ADV_STEPS:  # each ascent step is one more forward and backward pass
            raise ConfigError(f"--adv-steps must be at most {MAX_ADV_STEPS} (every step costs a training step; PGD and "
                              f"FreeLB use 2-5), got {self.adv_steps}")
        non_negative = ("max_minutes", "warmup_steps", "weight_decay", "grad_clip", "eval_every",
                        "eval_batches", "save_every", "patience", "min_lr")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.log_every <= 0:
            raise ConfigError(f"--log-every must be positive, got {self.log_every}")
        if not 0 < self.lr < 1:
            raise ConfigError(f"--lr must be in (0, 1), got {self.lr}")
        if self.min_lr > self.lr:
            raise ConfigError(f"--min-lr {self.min_lr} is larger than --lr {self.lr}")
        if not 0 < self.beta2 < 1:
            raise ConfigError(f"--beta2 must be in (0, 1), got {self.beta2}")
        for name in ("adv_epsilon", "adv_alpha", "adv_steps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")


@dataclass(kw_only=True)
class PretrainConfig(TrainConfig):
    """Self-supervised pretraining (causal or masked LM) on a packed data folder."""

    data: Path = field(help="packed data folder (train.bin, val.bin, tokenizer/, pack.json from `data pack`)")
    objective: str = field("clm", help="causal LM (decoder, Llama) or masked LM (encoder, BERT)",
                           choices=OBJECTIVES)
    preset: str = field("small", help="model size when starting from scratch", choices=PRESETS)
    model: Path | None = field(None, help="continue pretraining this local Hugging Face model folder "
                                          "instead of a fresh preset")
    hidden_size: int = field(0, help="custom preset: hidden size (0 = the preset's)")
    num_layers: int = field(0, help="custom preset: transformer layers (0 = the preset's)")
    num_heads: int = field(0, help="custom preset: attention heads (0 = the preset's)")
    intermediate_size: int = field(0, help="custom preset: MLP width (0 = the preset's)")
    dropout: float = field(0.0, help="dropout of a fresh model (attention for Llama; all for BERT)")
    mlm_probability: float = field(0.15, help="mlm: fraction of tokens selected for prediction")

    def check(self) -> None:
        super().check()
        if not 0 < self.mlm_probability < 1:
            raise ConfigError(f"--mlm-probability must be in (0, 1), got {self.mlm_probability}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")


@dataclass(kw_only=True)
class EvalConfig(Config):
    """Loss, perplexity and bits-per-byte of a model on the validation split of a packed data folder."""

    model: Path = field(help="Hugging Face model folder (a genforge run folder or any local checkpoint)")
    data: Path = field(help="packed data folder (val.bin, pack.json)")
    split: str = field("val", help="which token file to score", choices=("val", "train"))
    batch_size: int = field(8, help="sequences per batch")
    seq_len: int = field(0, help="tokens per sequence (0 = the model's maximum, at most 1024)")
    eval_batches: int = field(0, help="batches to score (0 = the whole split)")
    mlm_probability: float = field(0.15, help="mlm models: fraction of tokens masked for scoring")
    seed: int = field(1337, help="seed of the (fixed) mlm masks")
    bf16: bool = field(False, help="bf16 autocast where the hardware has native bf16 (faster, slightly less exact)")

    def check(self) -> None:
        for name in ("batch_size",):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("seq_len", "eval_batches"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.mlm_probability < 1:
            raise ConfigError(f"--mlm-probability must be in (0, 1), got {self.mlm_probability}")
