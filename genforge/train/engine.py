"""The one training loop of genforge. Every training stage calls `train(...)` with its own objective.

The step is visible in one place (`train`): schedule -> micro-batches (forward under autocast, loss,
backward) -> clip -> AdamW step -> log -> evaluate -> checkpoint. Everything that varies between
stages comes in as plain objects: the model (an nn.Module, usually HF), the objective
(`loss(model, batch) -> (loss, metrics)`), the batches (`batch(step, micro) -> dict of tensors`, a pure
function of the step, which makes resuming exact) and an optional `eval_data()` returning validation
batches. The loop never asks which objective it runs.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from genforge.errors import ConfigError, Stopped
from genforge.train.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from genforge.train.config import TrainConfig
from genforge.train.distributed import (
    Dist,
    all_reduce,
    barrier,
    full_state,
    grad_sync,
    load_optimizer_state,
    parallelize,
)
from genforge.train.evaluate import evaluate_loss, to_device
from genforge.train.logs import MetricsLog, diverged, note_resume, run_settings
from genforge.train.schedule import lr_at

LOWER_IS_BETTER = ("loss", "perplexity", "bits_per_byte")  # every other selection metric: higher is better


class Interrupted(Stopped):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint."""


class Batches(Protocol):
    def batch(self, step: int, micro: int) -> dict[str, torch.Tensor]: ...
    def state_dict(self, step: int) -> dict[str, Any]: ...


@dataclass
class TrainResult:
    steps: int
    tokens: int
    seconds: float
    stop_reason: str  # max_steps | max_minutes | patience
    train_loss: float
    best_step: int
    best: dict[str, float] = field(default_factory=dict)  # validation metrics of checkpoints/best
    last: dict[str, float] = field(default_factory=dict)  # validation metrics at the last step


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay the weight matrices; not norms, biases (dim < 2) or embeddings (by module type)."""
    embedding = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():  # de-duplicated: a tied head appears once, as the embedding
        if p.requires_grad:
            (decay if p.dim() >= 2 and id(p) not in embedding else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with decoupled weight decay; the fused kernel (one pass over all params) where available."""
    groups = decay_groups(model, cfg.weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2), eps=1e-8, fused=True)
    except (RuntimeError, TypeError):  # a device/dtype without the fused kernel
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2), eps=1e-8, foreach=True)


def bf16_available(device: torch.device) -> bool:
    """True where bf16 autocast is native (CUDA with bf16, CPUs with AVX512-BF16 or AMX); else emulation is slow."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)  # torch's default counts pre-Ampere emulation
    cpu = torch.cpu
    return any(getattr(cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def attention_kernel(device: torch.device, seq_len: int) -> str:
    """The faster attention for training on this device at this length (HF attn_implementation).

    Measured on a 2-core AVX-512 CPU (small preset, bf16, eager and compiled): plain attention (bf16
    matmuls + softmax) beats SDPA's CPU flash kernel by 10-25% up to 256 tokens and ties at 512;
    on GPUs, SDPA's fused kernels win. Only the kernel changes: the saved config keeps "sdpa".
    """
    return "eager" if device.type == "cpu" and seq_len <= 384 else "sdpa"


def compile_blocks(model: torch.nn.Module) -> bool:
    """Regional compilation: compile each repeated transformer block (HF's `_no_split_modules`) in place.

    The blocks share code, so one compilation serves them all: about half the compile time of the
    whole model at the same step time (measured). False when the model has no such blocks.
    """
    names = set(getattr(model, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    for block in blocks:
        block.compile()
    return bool(blocks)


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it at the next step boundary. A second signal stops at once."""

    def __init__(self) -> None:
        self.signum = 0

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum


@contextlib.contextmanager
def catch_signals(flag: StopFlag) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, flag) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def train(model: torch.nn.Module, objective: Any, batches: Batches, cfg: TrainConfig, run_dir: Path, *,
          eval_data: Callable[[], Iterable[dict[str, torch.Tensor]]] | None = None,
          score: Callable[[], dict[str, float]] | None = None, select: str = "loss",
          tokens_per_byte: float | None = None, dist: Dist | None = None,
          settings: dict[str, Any] | None = None) -> TrainResult:
    """Train `model` in place; write checkpoints/{latest,best} and logs/ under `run_dir` (main process only).

    Each evaluation measures the objective's loss on `eval_data()` and/or the metrics `score()` returns
    (called in eval mode without gradients: task metrics such as accuracy, possibly with a loss of its
    own). The `select` metric picks checkpoints/best and drives `cfg.patience`: lower is better for
    loss, perplexity and bits_per_byte, higher for anything else.

    `cfg.grad_accum` micro-batches make one optimizer step whatever the process count: each of the
    `dist.world` processes runs `grad_accum / world` of them (their union is the single-process batch).
    `tokens_per_byte` (tokens / UTF-8 bytes of the validation text) turns val loss into bits per byte.
    `settings`: the command's own settings beside `cfg`'s (the VAE's word dropout), saved in each checkpoint and
    compared on resume like the engine's. Raises `Interrupted` after saving checkpoints/latest when stopped by SIGINT/SIGTERM, and a ConfigError when
    a logged training loss or gradient norm is NaN/inf (nothing is exported from a diverged run).
    """
    dist = dist or Dist()
    device = dist.device
    if cfg.grad_accum % dist.world:
        raise ConfigError(f"--grad-accum {cfg.grad_accum} must be a multiple of the {dist.world} processes "
                          f"(the global batch is batch-size x grad-accum); use --grad-accum {dist.world}")
    local_accum = cfg.grad_accum // dist.world
    run_dir = Path(run_dir)
    latest, best_dir = run_dir / "checkpoints" / "latest", run_dir / "checkpoints" / "best"

    model.to(device)
    model.train()
    if cfg.activation_checkpointing:  # HF's own per-layer checkpointing (transformers >= 5 name)
        model.activation_checkpointing_enable({"use_reentrant": False})
    # best_val: the best selection value so far, negated when higher is better (so lower always wins)
    state: dict[str, Any] = {"step": 0, "tokens": 0, "elapsed": 0.0, "best_val": math.inf, "best_step": -1,
                             "bad_evals": 0, "train_loss": math.nan, "best": {}}
    saved = load_checkpoint(latest, model) if cfg.resume else None  # weights before sharding
    settings = {**run_settings(cfg), **(settings or {})}  # travel in each checkpoint; a resume says what changed
    fsdp = cfg.fsdp and dist.world > 1
    parallel = parallelize(model, dist, fsdp)
    optimizer = make_optimizer(model, cfg)
    if saved is not None:
        load_optimizer_state(model, optimizer, saved["optimizer"], fsdp)
        set_rng_state(saved["rng"])
        state.update({k: saved[k] for k in state})
    use_bf16 = cfg.bf16 and bf16_available(device)
    attention = getattr(model.config, "_attn_implementation", None) if hasattr(model, "config") else None
    if attention == "sdpa":  # an architecture without SDPA (MPNet) loads as "eager" and stays so
        model.set_attn_implementation(attention_kernel(device, cfg.seq_len))
    forward, loss_fn = parallel, objective.loss
    # An objective with `train_step(forward, batch, scale) -> loss` makes several passes per micro-batch
    # and calls backward itself, each loss scaled by `scale`; the default path is loss_fn + one backward.
    train_step = getattr(objective, "train_step", None)
    if cfg.compile and dist.world == 1:  # forward + loss in one graph: the most fusion (lm head + CE too)
        loss_fn = torch.compile(objective.loss)
    elif cfg.compile and not compile_blocks(model):  # under DDP/FSDP: per-block graphs, robust to wrappers
        forward = torch.compile(parallel)
    log = MetricsLog(run_dir / "logs", enabled=dist.is_main, resume_step=state["step"] if cfg.resume else None)
    if saved is not None and dist.is_main:
        note_resume(log, state["step"], saved, settings, f"step {state['step']}")

    def save(folder: Path, with_state: bool) -> None:
        model_state, optimizer_state = full_state(model, optimizer, fsdp)  # a collective under FSDP
        if dist.is_main:
            trainer_state = {**state, "settings": settings, "optimizer": optimizer_state, "rng": rng_state(),
                             "data": batches.state_dict(state["step"]), "world": dist.world} if with_state else None
            save_checkpoint(folder, model, trainer_state, model_state)
        barrier()

    def evaluate(step: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if eval_data is not None:
            result = evaluate_loss(model, objective, eval_data(), device=device, bf16=use_bf16)
            metrics = {"loss": result["loss"], "perplexity": result["perplexity"]}
            if tokens_per_byte:
                metrics["bits_per_byte"] = result["loss"] / math.log(2) * tokens_per_byte
        if score is not None:
            model.eval()
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                metrics.update(score())
            model.train()
        log.write(step, "val", metrics)
        if select not in metrics:
            raise ConfigError(f"cannot select checkpoints by '{select}': evaluation measures {sorted(metrics)}")
        value = metrics[select] if select in LOWER_IS_BETTER else -metrics[select]
        if value < state["best_val"]:
            state.update(best_val=value, best_step=step, bad_evals=0, best=metrics)
            save(best_dir, with_state=False)
        else:
            state["bad_evals"] += 1
        return metrics

    stop, reason, last_val, last_eval_step = StopFlag(), "max_steps", {}, -1
    evaluates = eval_data is not None or score is not None
    budget = cfg.max_minutes * 60
    t_start = time.perf_counter() - state["elapsed"]
    t_log, tokens_log, loss_sum, n_loss = time.perf_counter(), state["tokens"], torch.zeros((), device=device), 0
    quiet = {} if dist.is_main else {"disable": True}  # the main process keeps tqdm's default: TQDM_DISABLE=1 works
    # A run on a clock ends at max_steps or when time is up, whichever comes first: its bar aims at the step
    # the measured pace reaches in the time left (set at each log), so its percentage and ETA mean something.
    bar = tqdm(total=None if budget else cfg.max_steps, initial=state["step"], unit="step", dynamic_ncols=True,
               desc="train", **quiet)
    paced_from = (state["step"], state["elapsed"])
    with catch_signals(stop):
        for step in range(state["step"], cfg.max_steps):
            # One tiny collective per step keeps all processes agreeing on signals, time and the LR.
            flags = all_reduce(torch.tensor([float(stop.signum), time.perf_counter() - t_start]), op="max")
            if flags[0] > 0:
                reason = "signal"
                break
            if budget and flags[1] >= budget:
                reason = "max_minutes"
                break
            lr = lr_at(step, lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps,
                       max_steps=cfg.max_steps, time_fraction=float(flags[1]) / budget if budget else 0.0)
            for group in optimizer.param_groups:
                group["lr"] = lr

            # Weights from the host batches: counting tokens on the device would sync it every step.
            host_batches = [batches.batch(step, dist.rank * local_accum + micro) for micro in range(local_accum)]
            weights, step_tokens = weigh_micro_batches(objective, host_batches, dist.world)
            state["tokens"] += step_tokens
            for micro, (host_batch, weight) in enumerate(zip(host_batches, weights, strict=True)):
                batch = to_device(host_batch, device)
                with grad_sync(parallel, enabled=micro == local_accum - 1):
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                        if train_step is not None:  # a wrapper (adversarial) runs its passes and backward(s)
                            loss = train_step(forward, batch, weight)
                        else:
                            loss, _ = loss_fn(forward, batch)
                    if train_step is None:
                        (loss * weight).backward()
                loss_sum += loss.detach() * weight
            n_loss += 1
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip else None
            if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
                grad_norm = grad_norm.full_tensor()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] = step + 1
            state["elapsed"] = time.perf_counter() - t_start
            bar.update(1)

            if state["step"] % cfg.log_every == 0 or state["step"] == cfg.max_steps:
                stats = torch.stack([loss_sum / n_loss, grad_norm if grad_norm is not None else loss_sum * 0])
                loss_value, norm_value = (all_reduce(stats.detach().float().cpu()) / dist.world).tolist()
                now = time.perf_counter()
                record = {"loss": loss_value, "lr": lr, "grad_norm": norm_value,
                          "tokens_per_s": (state["tokens"] - tokens_log) / max(now - t_log, 1e-9),
                          "tokens": state["tokens"],
                          "elapsed_s": state["elapsed"]}
                state["train_loss"] = loss_value
                log.write(state["step"], "train", record)
                if diverged(record):  # every process sees the same all-reduced values, so all stop here
                    bar.close()
                    log.close()
                    raise ConfigError(f"training diverged at step {state['step']} (loss {loss_value:.4g}, gradient "
                                      f"norm {norm_value:.4g}); lower --lr (now {cfg.lr:g}) and run again")
                postfix = {"loss": f"{loss_value:.3f}", "tok_s": f"{record['tokens_per_s']:.0f}", "lr": f"{lr:.1e}"}
                if budget:
                    pace = (state["step"] - paced_from[0]) / max(state["elapsed"] - paced_from[1], 1e-9)
                    bar.total = min(cfg.max_steps, state["step"] + int(max(0.0, budget - state["elapsed"]) * pace))
                bar.set_postfix(postfix)
                t_log, tokens_log, n_loss = now, state["tokens"], 0
                loss_sum.zero_()

            if cfg.eval_every and state["step"] % cfg.eval_every == 0 and evaluates:
                last_val, last_eval_step = evaluate(state["step"]), state["step"]
                t_log, tokens_log = time.perf_counter(), state["tokens"]
                if cfg.patience and state["bad_evals"] >= cfg.patience:
                    reason = "patience"
                    break
            if cfg.save_every and state["step"] % cfg.save_every == 0:
                save(latest, with_state=True)
                t_log, tokens_log = time.perf_counter(), state["tokens"]
    if reason == "max_minutes":  # the clock ended it: the bar ends full
        bar.total = state["step"]
    bar.close()
    if reason == "signal":
        save(latest, with_state=True)
        log.close()
        signum = int(flags[0])
        raise Interrupted(f"stopped by {signal.Signals(signum).name} at step {state['step']}: checkpoint saved in "
                          f"{latest}; continue with the same command plus --resume", signum)
    if evaluates and last_eval_step != state["step"]:
        last_val = evaluate(state["step"])
    save(latest, with_state=True)
    log.close()
    if attention == "sdpa":
        model.set_attn_implementation(attention)
    return TrainResult(steps=state["step"], tokens=state["tokens"], seconds=state["elapsed"], stop_reason=reason,
                       train_loss=state["train_loss"], best_step=state["best_step"], best=state.get("best", {}),
                       last=last_val)


def tokens_read(batch: dict[str, Any]) -> int:
    """Tokens a batch gives the model to read: padding (attention mask 0) is no work done, and counting it
    would make a padded SFT or classification batch look faster than it is."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


def weigh_micro_batches(objective: Any, micro_batches: list[dict[str, torch.Tensor]], world: int
                        ) -> tuple[list[float], int]:
    """(what each micro-batch's mean loss is multiplied by in this process's share of a step's gradient,
    the tokens all processes read in the step), from one all-reduce of this process's counts.

    With `objective.count` (the tokens a loss averages over) a micro-batch weighs its share of all the step's
    tokens, over every process; times `world`, since DDP/FSDP average the processes' gradients. The step's
    gradient is then the token mean over the global batch, as one batch would give: a micro-batch of short SFT
    answers no longer counts as much as one of long answers, and the logged loss matches evaluation's token
    mean. Without `count` (classification, DPO: a mean over examples), each micro-batch weighs the same.
    The tokens read are summed over the processes, not this one's times `world`: padded batches differ by process.
    """
    count = getattr(objective, "count", None)
    counts = [count(batch) for batch in micro_batches] if count is not None else []
    counted = bool(counts) and all(c is not None for c in counts)
    local = torch.stack([torch.as_tensor(c, dtype=torch.float64) for c in counts]).cpu() if counted else None
    read = sum(tokens_read(batch) for batch in micro_batches)
    totals = all_reduce(torch.tensor([float(local.sum()) if counted else 0.0, read], dtype=torch.float64))
    total, tokens = float(totals[0]), int(totals[1])
    if not counted or total == 0:  # no predicted token anywhere: the losses are NaN and the run stops as diverged
        return [1 / len(micro_batches)] * len(micro_batches), tokens
    return [float(c) * world / total for c in local], tokens


def checkpoint_exists(run_dir: Path) -> bool:
    """Whether the run holds a checkpoint to resume, counting the one a kill between save_checkpoint's two
    renames leaves under its temporary name (load_checkpoint resumes that one)."""
    return find_checkpoint(Path(run_dir) / "checkpoints" / "latest") is not None
