"""Evaluation: loss, perplexity and bits-per-byte of a model on a split of a packed data folder.

Bits-per-byte makes models with different tokenizers comparable: it is the total negative
log-likelihood of the text, in bits, divided by the text's UTF-8 bytes. The windows we score cover
the token stream, so with the mean NLL per predicted token (nats) and the token and byte counts of
the split (from pack.json):  bpb = (nll_per_token / ln 2) * (tokens / bytes).
For masked LMs the same formula over masked tokens is a pseudo-bpb: comparable between MLM runs only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

import torch

from genforge.errors import ConfigError
from genforge.train.config import EvalConfig
from genforge.train.distributed import all_reduce


def bits_per_byte(nll_per_token: float, tokens: int, n_bytes: int) -> float:
    """Bits per UTF-8 byte from the mean NLL per token (nats) and the split's token and byte counts."""
    return nll_per_token / math.log(2) * tokens / n_bytes


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate_loss(model: Any, objective: Any, batches: Iterable[dict[str, torch.Tensor]], *,
                  device: torch.device, bf16: bool = False) -> dict[str, float]:
    """Token-weighted mean loss over `batches` (summed over processes) and its perplexity.

    A batch without targets (the padding `eval_batches` gives a process short of a batch) still runs
    its forward, a collective under FSDP, but adds nothing: its mean loss is NaN, and NaN * 0 is NaN."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    for batch in batches:
        with autocast:
            loss, metrics = objective.loss(model, to_device(batch, device))
        tokens = metrics["tokens"].to(loss.device, torch.float64)  # an objective may count on the host
        summed = torch.where(tokens > 0, loss.detach().double() * tokens, 0.0)  # no host sync, unlike an `if`
        totals += torch.stack([summed, tokens])
    all_reduce(totals)
    model.train(was_training)
    nll, tokens = totals.tolist()
    if tokens == 0:
        return {"loss": float("nan"), "perplexity": float("nan"), "tokens": 0}
    loss = nll / tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 80.0)), "tokens": int(tokens)}


def evaluate(cfg: EvalConfig) -> dict[str, float]:
    """Score a model folder on a packed split; print and return {"loss", "perplexity", "bits_per_byte"}."""
    from genforge.data.pack import packed_tokenizer
    from genforge.models.load import check_finished_run, load_model, max_positions
    from genforge.train.data import eval_batches, open_tokens, read_pack
    from genforge.train.engine import bf16_available
    from genforge.train.objectives import ClmObjective, MlmObjective
    from genforge.train.pretrain import check_same_tokenizer, check_vocab, special_token_ids

    pack = read_pack(cfg.data)
    # check_vocab compares sizes only: another tokenizer's ids would score as nonsense (checked before loading)
    tokenizer = packed_tokenizer(cfg.data)
    check_finished_run(cfg.model)
    check_same_tokenizer(cfg.model, tokenizer)
    model, objective_name = load_model(cfg.model)
    limit = max_positions(model.config) or 1024
    seq_len = cfg.seq_len or min(limit, 1024)
    if seq_len > limit:
        raise ConfigError(f"--seq-len {seq_len} is longer than the model's {limit} positions")
    check_vocab(model.config.vocab_size, pack, cfg.model)
    if objective_name == "clm":
        objective = ClmObjective()
    else:
        ids = special_token_ids(tokenizer, need_mask=True, where=cfg.data / "tokenizer")
        objective = MlmObjective(mask_id=ids["mask"], vocab_size=pack["vocab_size"],
                                 special_ids=sorted(set(tokenizer.all_special_ids)), probability=cfg.mlm_probability)
    window = objective.window_len(seq_len)
    tokens = open_tokens(cfg.data / f"{cfg.split}.bin", pack["dtype"], window)
    batches = eval_batches(tokens, window, seq_len, cfg.batch_size, objective.make_batch,
                           max_batches=cfg.eval_batches, seed=cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = evaluate_loss(model.to(device), objective, batches, device=device,
                           bf16=cfg.bf16 and bf16_available(device))
    out = {"loss": result["loss"], "perplexity": result["perplexity"],
           "bits_per_byte": bits_per_byte(result["loss"], pack[f"{cfg.split}_tokens"], pack[f"{cfg.split}_bytes"])}
    print(json.dumps({k: round(v, 6) for k, v in out.items()}))
    return out
