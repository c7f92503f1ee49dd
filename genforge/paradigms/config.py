"""Configs of the generative paradigms beside the LM: text VAE, text GAN (+ the synthetic oracle), image GAN.

Light on purpose (no torch import): the CLI builds its flags from these dataclasses. The maximum-
likelihood phases (VAE training, MLE pre-training of a GAN generator) run in the one training engine,
so their knobs mean what the same flags mean on `genforge pretrain`; the adversarial phases have
their own short loop (two optimisers) with the knobs below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genforge.config import Config, field
from genforge.errors import ConfigError

GAN_VARIANTS = ("seqgan", "gumbel")
GENERATORS = ("lstm", "tiny", "small", "base")  # an LSTM or genforge's decoder preset
ANNEALING = ("linear", "logistic", "none")
MAX_SAMPLES = 1000  # `vae sample` decodes all its sentences as one batch: (n, vocabulary) logits per step
MAX_GAN_LEN = 128  # SeqGAN/RelGAN texts are 20-50 tokens; see TextGanConfig.check


def _positive(cfg: object, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")


def _non_negative(cfg: object, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")


@dataclass(kw_only=True)
class VaeConfig(Config):
    """Sequence VAE on the sentences of a packed data folder (one document per sentence)."""

    data: Path = field(help="packed data folder (train.bin, val.bin, tokenizer/, pack.json from `data pack`)")
    out: Path = field(help="output run folder")
    max_len: int = field(32, help="tokens per sentence (longer ones are cut)")
    embed_size: int = field(256, help="token embedding size")
    hidden_size: int = field(256, help="LSTM hidden size of encoder and decoder")
    latent_size: int = field(32, help="dimensions of the Gaussian latent z")
    kl_annealing: str = field("logistic", help="KL weight schedule from 0 to 1 (Bowman et al. 2016)",
                              choices=ANNEALING)
    anneal_steps: int = field(2000, help="steps over which the KL weight rises to 1")
    word_dropout: float = field(0.3, help="probability of replacing a decoder input token by <mask>, which "
                                          "forces the decoder to use z")
    free_bits: float = field(0.1, help="nats of KL per latent dimension that are not penalised (0 = off)")
    max_steps: int = field(3000, help="optimizer steps")
    batch_size: int = field(32, help="sentences per step")
    lr: float = field(1e-3, help="peak learning rate")
    eval_every: int = field(250, help="evaluate every N steps")
    save_every: int = field(250, help="write checkpoints/latest every N steps")
    seed: int = field(1337, help="random seed")
    resume: bool = field(False, help="continue the run in --out from checkpoints/latest")

    def check(self) -> None:
        _positive(self, "max_len", "embed_size", "hidden_size", "latent_size", "anneal_steps", "max_steps",
                  "batch_size", "eval_every", "save_every")
        _non_negative(self, "free_bits")
        if not 0 <= self.word_dropout < 1:
            raise ConfigError(f"--word-dropout must be in [0, 1), got {self.word_dropout}")
        if not 0 < self.lr < 1:
            raise ConfigError(f"--lr must be in (0, 1), got {self.lr}")


@dataclass(kw_only=True)
class VaeSampleConfig(Config):
    """Sentences from a trained text VAE: draws from the prior, or a path between two sentences."""

    model: Path = field(help="a `genforge vae train` run folder")
    n: int = field(5, help=f"sentences drawn from the prior (at most {MAX_SAMPLES})")
    interpolate: list[str] = field(default_factory=list, help="two sentences: decode points on the line "
                                                              "between their latent codes (repeat the flag)")
    steps: int = field(5, help=f"points on the interpolation line, ends included (at most {MAX_SAMPLES})")
    temperature: float = field(0.0, help="decoding temperature (0 = greedy)")
    seed: int = field(0, help="random seed")

    def check(self) -> None:
        _positive(self, "n", "steps")
        _non_negative(self, "temperature")
        for name in ("n", "steps"):
            if getattr(self, name) > MAX_SAMPLES:
                raise ConfigError(f"--{name} must be at most {MAX_SAMPLES}, got {getattr(self, name)}: the sentences "
                                  "are decoded as one batch; for more, run again with another --seed")
        if self.interpolate and len(self.interpolate) != 2:
            raise ConfigError(f"--interpolate takes exactly two sentences, got {len(self.interpolate)}")


@dataclass(kw_only=True)
class GanConfig(Config):
    """The knobs shared by the text GANs: MLE pre-training, discriminator pre-training, adversarial epochs."""

    out: Path = field(help="output run folder")
    variant: list[str] = field(default_factory=lambda: list(GAN_VARIANTS), help="adversarial variants to "
                               "train from the same MLE generator (repeat the flag)", choices=GAN_VARIANTS)
    generator: str = field("lstm", help="generator: an LSTM or genforge's decoder preset", choices=GENERATORS)
    embed_size: int = field(32, help="LSTM generator: embedding size")
    hidden_size: int = field(32, help="LSTM generator: hidden size")
    batch_size: int = field(64, help="sequences per step (all phases)")
    mle_steps: int = field(3000, help="MLE pre-training steps of the generator (the engine)")
    mle_lr: float = field(1e-2, help="MLE pre-training peak learning rate")
    disc_pretrain_steps: int = field(500, help="discriminator pre-training steps on real vs generated")
    adv_epochs: int = field(100, help="adversarial epochs (1 generator step + disc-steps discriminator steps)")
    disc_steps: int = field(3, help="discriminator steps per adversarial epoch")
    gen_lr: float = field(1e-3, help="adversarial generator learning rate (Adam)")
    disc_lr: float = field(1e-4, help="discriminator learning rate (Adam)")
    rollouts: int = field(16, help="seqgan: Monte-Carlo rollouts per prefix for the reward of each token")
    gumbel_temperature: float = field(100.0, help="gumbel: final inverse temperature of the relaxation "
                                                  "(annealed exponentially from 1, as in RelGAN)")
    eval_every: int = field(10, help="adversarial epochs between evaluations")
    eval_samples: int = field(2000, help="samples scored per evaluation")
    max_minutes: float = field(0.0, help="time budget for each adversarial variant (0 = none)")
    seed: int = field(1337, help="random seed")
    resume: bool = field(False, help="continue the run in --out from its checkpoints")

    def check(self) -> None:
        _positive(self, "embed_size", "hidden_size", "batch_size", "mle_steps", "rollouts", "eval_every",
                  "eval_samples", "disc_steps", "gumbel_temperature")
        _non_negative(self, "disc_pretrain_steps", "adv_epochs", "max_minutes")
        for name in ("mle_lr", "gen_lr", "disc_lr"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be in (0, 1), got {getattr(self, name)}")
        if not self.variant:
            raise ConfigError("--variant needs at least one of " + ", ".join(GAN_VARIANTS))


@dataclass(kw_only=True)
class TextGanConfig(GanConfig):
    """A text GAN on the sentences of a packed data folder."""

    data: Path = field(help="packed data folder (train.bin, val.bin, tokenizer/, pack.json from `data pack`)")
    seq_len: int = field(20, help=f"tokens per generated sentence, at most {MAX_GAN_LEN} (shorter ones are "
                                    "padded with EOS)")

    def check(self) -> None:
        """seq_len is bounded: every sentence is padded to it, the Gumbel variant holds batch x seq_len x
        vocabulary relaxed one-hots, and SeqGAN's rollouts grow with its square."""
        super().check()
        _positive(self, "seq_len")
        if self.seq_len > MAX_GAN_LEN:
            raise ConfigError(f"--seq-len must be at most {MAX_GAN_LEN}, got {self.seq_len}: text GANs generate "
                              "short sentences (every one is padded to --seq-len, and the adversarial phase's "
                              "cost and memory grow with it); longer texts are a job for an LM (`genforge pretrain`)")


@dataclass(kw_only=True)
class OracleConfig(GanConfig):
    """The synthetic-oracle benchmark of SeqGAN/Texygen: vocabulary 5,000, length 20, LSTM 32/32."""

    oracle: Path | None = field(None, help="folder with the published oracle_params.npz and real_data.txt "
                                           "(../shared/data/seqgan_oracle); without it a seeded N(0,1) oracle")
    train_size: int = field(10000, help="oracle samples to train on (a random oracle only)")
    test_size: int = field(10000, help="held-out oracle samples for NLL-test")

    def check(self) -> None:
        super().check()
        _positive(self, "train_size", "test_size")
        if self.generator != "lstm":
            raise ConfigError("the oracle benchmark compares LSTM generators (32/32); use --generator lstm")


@dataclass(kw_only=True)
class ImageGanConfig(Config):
    """DCGAN on a folder of images, one sub-folder per class (PNG/JPEG)."""

    images: Path = field(help="image folder: one sub-folder per class")
    out: Path = field(help="output run folder")
    image_size: int = field(32, help="images are resized to this square size (16, 32 or 64)", choices=(16, 32, 64))
    channels: int = field(0, help="1 = grey, 3 = RGB (0 = grey if every image is grey)", choices=(0, 1, 3))
    latent_size: int = field(100, help="dimensions of the noise vector z")
    width: int = field(64, help="feature maps of the first discriminator / last generator layer")
    conditional: bool = field(False, help="condition generator and discriminator on the class")
    epochs: int = field(20, help="passes over the images")
    batch_size: int = field(64, help="images per step")
    lr: float = field(2e-4, help="Adam learning rate (both networks)")
    beta1: float = field(0.5, help="Adam beta1 (DCGAN: 0.5)")
    log_every: int = field(100, help="log losses every N steps")
    classifier_epochs: int = field(10, help="epochs of the evaluation classifier trained on the real images")
    eval_samples: int = field(1000, help="generated images scored at the end")
    max_minutes: float = field(0.0, help="time budget of the GAN training (0 = none)")
    seed: int = field(1337, help="random seed")
    resume: bool = field(False, help="continue the run in --out from checkpoints/latest")

    def check(self) -> None:
        _positive(self, "latent_size", "width", "epochs", "batch_size", "log_every", "eval_samples")
        _non_negative(self, "classifier_epochs", "max_minutes")
        if not 0 < self.lr < 1:
            raise ConfigError(f"--lr must be in (0, 1), got {self.lr}")
        if not 0 <= self.beta1 < 1:
            raise ConfigError(f"--beta1 must be in [0, 1), got {self.beta1}")
