"""`genforge vae train`: a sequence VAE (Bowman et al. 2016) trained by the one engine.

Encoder LSTM -> Gaussian q(z|x) -> autoregressive LSTM decoder that sees z at every step. A strong
decoder can model text alone and ignore z ("posterior collapse": KL -> 0), so three remedies from
the literature work together: KL-cost annealing (the KL weight rises from 0 to 1 so the decoder
learns to use z before it is penalised), word dropout (decoder inputs replaced by <mask>, so the
decoder must lean on z) and free bits (Kingma et al. 2016: the first `free_bits` nats of KL per
latent dimension, averaged over the batch, cost nothing). Each evaluation reports the negative ELBO,
reconstruction NLL and KL per sentence and the active units (latent dimensions whose posterior mean
varies over the data, Burda et al. 2016).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genforge.artifacts import read_manifest, reading, write_json, write_manifest
from genforge.config import check_training_memory
from genforge.errors import ArtifactError, DataError
from genforge.models.presets import meta_params
from genforge.paradigms.config import VaeConfig
from genforge.paradigms.runs import begin_run, check_run_folder
from genforge.train.checkpoint import WEIGHTS
from genforge.train.config import TrainConfig
from genforge.train.data import mix_seed, read_pack
from genforge.train.engine import checkpoint_exists, train
from genforge.train.logs import plot_loss, run_settings
from genforge.train.objectives import IGNORE, predicted_tokens

MARKER = "checkpoints/latest"  # a run has started once it wrote this (see genforge.paradigms.runs)


class TextVae(nn.Module):
    def __init__(self, vocab_size: int, embed_size: int, hidden_size: int, latent_size: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_size)
        self.encoder = nn.LSTM(embed_size, hidden_size, batch_first=True)
        self.to_stats = nn.Linear(hidden_size, 2 * latent_size)
        self.to_state = nn.Linear(latent_size, hidden_size)
        self.decoder = nn.LSTM(embed_size + latent_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x); the last real token's state summarises the sentence."""
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(tokens), lengths.cpu().clamp(min=1),
                                                   batch_first=True, enforce_sorted=False)
        _, (h, _) = self.encoder(packed)
        return self.to_stats(h[-1]).chunk(2, dim=-1)

    def decode(self, z: torch.Tensor, inputs: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Next-token logits for decoder `inputs` given z (z initialises the state and joins every input)."""
        if state is None:
            h0 = torch.tanh(self.to_state(z)).unsqueeze(0)
            state = (h0, torch.zeros_like(h0))
        x = torch.cat([self.embed(inputs), z.unsqueeze(1).expand(-1, inputs.shape[1], -1)], dim=-1)
        out, state = self.decoder(x, state)
        return self.head(out), state


def kl_weight(step: int, schedule: str, anneal_steps: int) -> float:
    """KL-cost annealing: `linear` 0 -> 1 over anneal_steps; `logistic` a sigmoid centred at half of it."""
    if schedule == "none":
        return 1.0
    if schedule == "linear":
        return min(1.0, step / anneal_steps)
    return 1.0 / (1.0 + math.exp(-10.0 * (step - anneal_steps / 2) / anneal_steps))


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per example and dimension, (B, D)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def free_bits_kl(kl: torch.Tensor, free_bits: float) -> torch.Tensor:
    """Sum over dimensions of max(batch-mean KL_d, free_bits): no gradient below the allowance."""
    return kl.mean(0).clamp(min=free_bits).sum() if free_bits else kl.mean(0).sum()


def word_dropout(inputs: torch.Tensor, labels: torch.Tensor, p: float, mask_id: int) -> torch.Tensor:
    """Decoder inputs with each word replaced by `mask_id` with probability p; start token and padding kept."""
    if not p:
        return inputs
    drop = (torch.rand(inputs.shape, device=inputs.device) < p) & (labels != IGNORE)
    drop[:, 0] = False  # the start token
    return inputs.masked_fill(drop, mask_id)


@dataclass
class VaeObjective:
    """Negative ELBO per token with annealed KL weight (from the batch), word dropout and free bits."""

    mask_id: int
    word_dropout: float
    free_bits: float
    name: str = "vae"

    def terms(self, model: TextVae, batch: dict[str, torch.Tensor], dropout: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction NLL per sentence (B,), KL (B, D), mu (B, D)) with one reparameterised sample."""
        mu, logvar = model.encode(batch["input_ids"], batch["lengths"])
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        inputs = word_dropout(batch["decoder_input"], batch["labels"], dropout, self.mask_id)
        logits, _ = model.decode(z, inputs)
        rec = F.cross_entropy(logits.transpose(1, 2).float(), batch["labels"], ignore_index=IGNORE,
                              reduction="none").sum(1)
        return rec, gaussian_kl(mu.float(), logvar.float()), mu

    def count(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return predicted_tokens(batch)  # the loss is per token

    def loss(self, model: TextVae, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rec, kl, _ = self.terms(model, batch, self.word_dropout if model.training else 0.0)
        tokens = (batch["labels"] != IGNORE).sum()
        weight = batch["kl_weight"][0]
        loss = (rec.sum() + weight * free_bits_kl(kl, self.free_bits) * len(rec)) / tokens
        return loss, {"tokens": tokens, "kl": kl.sum(1).mean().detach()}


def read_sentences(data: Any, split: str, pack: dict[str, Any], max_len: int) -> list[np.ndarray]:
    """The documents of a packed split (EOS-separated) as token arrays, cut to `max_len`; empty ones dropped."""
    tokens = np.fromfile(data / f"{split}.bin", dtype=np.dtype(pack["dtype"]))
    ends = np.flatnonzero(tokens == pack["eos_id"])
    starts = np.concatenate([[0], ends + 1])[:len(ends)]  # none when the file holds no EOS
    sentences = [tokens[s:e][:max_len].astype(np.int64) for s, e in zip(starts, ends, strict=True) if e > s]
    if not sentences:
        raise DataError(f"{data}/{split}.bin holds no documents: prepare and pack some text first")
    return sentences


def collate(sentences: list[np.ndarray], bos: int, eos: int, pad: int) -> dict[str, torch.Tensor]:
    """Encoder input (padded), lengths, decoder input (BOS + tokens) and labels (tokens + EOS, -100 pad).

    `attention_mask` (1 on the encoder input's real tokens) is what the engine counts as tokens read: without it
    the padding to the longest sentence counted too, and tokens_per_s overstated the throughput.
    """
    width = max(len(s) for s in sentences) + 1
    ids = torch.full((len(sentences), width - 1), pad, dtype=torch.long)
    dec = torch.full((len(sentences), width), pad, dtype=torch.long)
    labels = torch.full((len(sentences), width), IGNORE, dtype=torch.long)
    for i, s in enumerate(sentences):
        t = torch.from_numpy(s)
        ids[i, :len(s)], dec[i, 0], dec[i, 1:len(s) + 1] = t, bos, t
        labels[i, :len(s)], labels[i, len(s)] = t, eos
    real = torch.tensor([len(s) for s in sentences])
    return {"input_ids": ids, "attention_mask": (torch.arange(width - 1) < real[:, None]).long(),
            "lengths": real.clamp(min=1), "decoder_input": dec, "labels": labels}


@dataclass
class SentenceBatches:
    """Random sentences per step, a pure function of the step, with the step's KL weight attached."""

    sentences: list[np.ndarray]
    cfg: VaeConfig
    special: dict[str, int]

    def batch(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(mix_seed(self.cfg.seed, "sentences", step, micro))
        index = torch.randint(0, len(self.sentences), (self.cfg.batch_size,), generator=g).tolist()
        batch = collate([self.sentences[i] for i in index], self.special["bos"], self.special["eos"],
                        self.special["pad"])
        batch["kl_weight"] = torch.tensor([kl_weight(step, self.cfg.kl_annealing, self.cfg.anneal_steps)])
        return batch

    def state_dict(self, step: int) -> dict[str, Any]:
        return {"next_step": step, "seed": self.cfg.seed, "sentences": len(self.sentences)}


@torch.no_grad()
def vae_metrics(model: TextVae, objective: VaeObjective, val: list[np.ndarray], special: dict[str, int]
                ) -> dict[str, float]:
    """Negative ELBO ("loss", nats per token, the selection metric), and per sentence: -ELBO, reconstruction
    NLL, KL; active units (Var_x E_q[z_d] > 0.01).

    The latent samples come from a fixed seed on a forked RNG: the same weights score the same (a resumed
    run's re-evaluation agrees with the first), and evaluating does not move the training's random stream.
    """
    rec_sum, kl_sum, tokens, mus = 0.0, 0.0, 0, []
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for i in range(0, len(val), 256):
            batch = collate(val[i:i + 256], special["bos"], special["eos"], special["pad"])
            rec, kl, mu = objective.terms(model, batch, 0.0)
            rec_sum, kl_sum = rec_sum + rec.sum().item(), kl_sum + kl.sum().item()
            tokens += int((batch["labels"] != IGNORE).sum())
            mus.append(mu)
    n = len(val)
    active = int((torch.cat(mus).var(0) > 0.01).sum()) if n > 1 else 0
    return {"loss": (rec_sum + kl_sum) / tokens, "neg_elbo": (rec_sum + kl_sum) / n, "rec_nll": rec_sum / n,
            "kl": kl_sum / n, "active_units": active}


def vae_train(cfg: VaeConfig) -> Any:
    """Train a text VAE on `cfg.data`; return the run folder (model.safetensors, vae.json, tokenizer/)."""
    from genforge.data.pack import packed_tokenizer

    pack = read_pack(cfg.data)
    started_run = checkpoint_exists(cfg.out)
    check_run_folder(cfg.out, "vae", resume=cfg.resume, started=started_run, marker=MARKER)
    tokenizer = packed_tokenizer(cfg.data)
    special = {"bos": tokenizer.bos_token_id, "eos": pack["eos_id"], "pad": tokenizer.pad_token_id,
               "mask": tokenizer.mask_token_id}
    if None in special.values():
        missing = next(k for k, v in special.items() if v is None)
        raise DataError(f"tokenizer {cfg.data / 'tokenizer'} has no {missing} token: retrain it with genforge")
    train_rows = read_sentences(cfg.data, "train", pack, cfg.max_len)
    val_rows = read_sentences(cfg.data, "val", pack, cfg.max_len)[:2000]
    check_training_memory(lambda: meta_params(TextVae, pack["vocab_size"], cfg.embed_size, cfg.hidden_size,
                                              cfg.latent_size), cfg, "embed_size", "hidden_size", "latent_size")
    # only now, with the data read: bad data leaves an earlier run in --out whole
    started = begin_run(cfg.out, "vae", resume=cfg.resume, started=started_run, marker=MARKER,
                        written=("checkpoints", "logs"))
    torch.manual_seed(cfg.seed)
    model = TextVae(pack["vocab_size"], cfg.embed_size, cfg.hidden_size, cfg.latent_size)
    objective = VaeObjective(mask_id=special["mask"], word_dropout=cfg.word_dropout, free_bits=cfg.free_bits)
    train_cfg = TrainConfig(out=cfg.out, max_steps=cfg.max_steps, batch_size=cfg.batch_size, seq_len=cfg.max_len,
                            lr=cfg.lr, min_lr=cfg.lr / 10, warmup_steps=min(100, cfg.max_steps // 10),
                            weight_decay=0.0, grad_clip=5.0, eval_every=cfg.eval_every, save_every=cfg.save_every,
                            log_every=min(10, cfg.eval_every), seed=cfg.seed, bf16=False, resume=cfg.resume)
    result = train(model, objective, SentenceBatches(train_rows, cfg, special), train_cfg, cfg.out,
                   score=lambda: vae_metrics(model, objective, val_rows, special), select="loss",
                   settings=run_settings(cfg))
    shutil.copy2(cfg.out / "checkpoints" / "best" / WEIGHTS, cfg.out / WEIGHTS)
    tokenizer.save_pretrained(cfg.out / "tokenizer")
    write_json(cfg.out / "vae.json", {"vocab_size": pack["vocab_size"], "embed_size": cfg.embed_size,
                                      "hidden_size": cfg.hidden_size, "latent_size": cfg.latent_size,
                                      "max_len": cfg.max_len, "special_ids": special})
    plot_loss(cfg.out / "logs")
    metrics = {**result.best, "best_step": result.best_step, "steps": result.steps,
               "train_seconds": round(result.seconds, 1), "stop_reason": result.stop_reason}
    write_manifest(cfg.out, "vae", cfg, inputs=[cfg.data / "train.bin", cfg.data / "val.bin"], parent=pack,
                   metrics=metrics, started=started)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"vae train -> {cfg.out}", show_header=False)
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console(stderr=True).print(table)
    return cfg.out


VAE_KEYS = ("vocab_size", "embed_size", "hidden_size", "latent_size", "max_len")
SPECIAL_KEYS = ("bos", "eos", "pad", "mask")
RETRAIN = "retrain with `genforge vae train`"  # the remedy for a damaged run folder


def read_vae_info(folder: Any) -> dict[str, Any]:
    """vae.json of a run folder, checked: the sizes the model is rebuilt from and the special token ids."""
    import json

    path = folder / "vae.json"
    with reading(path, RETRAIN):
        info = json.loads(path.read_text(encoding="utf-8"))
    special = info.get("special_ids") if isinstance(info, dict) else None
    sizes_ok = isinstance(info, dict) and all(isinstance(info.get(k), int) and info[k] > 0 for k in VAE_KEYS)
    if not sizes_ok or not isinstance(special, dict) or not all(isinstance(special.get(k), int) for k in SPECIAL_KEYS):
        raise ArtifactError(f"{path} lacks the model sizes ({', '.join(VAE_KEYS)}) or special_ids "
                            f"({', '.join(SPECIAL_KEYS)}): {RETRAIN}")
    return info


def load_vae(folder: Any) -> tuple[TextVae, Any, dict[str, Any]]:
    """(model, tokenizer, vae.json) of a finished `vae train` run folder; a damaged one is an ArtifactError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from genforge.finetune.model import load_tokenizer

    read_manifest(folder, "vae")
    info = read_vae_info(folder)
    model = TextVae(info["vocab_size"], info["embed_size"], info["hidden_size"], info["latent_size"])
    with reading(folder / WEIGHTS, RETRAIN, also=(SafetensorError, RuntimeError)):
        model.load_state_dict(load_file(folder / WEIGHTS))
    if not (folder / "tokenizer").is_dir():
        raise ArtifactError(f"{folder}/tokenizer is missing: {RETRAIN}")
    return model.eval(), load_tokenizer(folder / "tokenizer"), info
