"""Training throughput: genforge's engine vs transformers.Trainer, same model, data, batch, threads.

Both train the `small` Llama preset on the same random-token windows with their best options (bf16
autocast, fused AdamW, torch.compile), in this process, one after the other (best of `--rounds`
alternating runs, since the cores may be shared). Reports tokens/s, the ratio, and MFU: training
FLOPs (nanoGPT's 6N + 12LHQT per token, N including the output head) against a bf16 matmul peak
measured in the same run. Where genforge's edge comes from: on CPU at short sequences it trains with
plain attention instead of SDPA's flash kernel, and `--compile` puts the forward and the loss in one
graph; the Trainer's model gets HF's default SDPA (`--trainer-attention eager` to compare kernels).
`--objective mlm` trains the `small` BERT preset as a masked LM instead (the same 15% masks for both;
genforge sends only the masked positions through the output projection, the Trainer's model all of
them; `--vocab 30522` is MiniLM's/BERT's vocabulary, where the projection weighs most;
`--all-positions` makes genforge project every position too, as the Trainer's model does, to show
what that saving is worth).
Both sides use bf16 where the CPU has native bf16 (genforge.train.engine.bf16_available) and fp32
elsewhere, as genforge's engine decides for itself; the header prints the precision each side used.

    .venv/bin/python benchmarks/bench_train.py            # full: 30 timed steps, torch.compile on
    .venv/bin/python benchmarks/bench_train.py --quick    # smoke: a few steps, eager
    .venv/bin/python benchmarks/bench_train.py --objective mlm --vocab 30522 --seq-len 128 --batch-size 32 \
        [--all-positions]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # timings only; no progress bars interleaved

from genforge.models.presets import build_model, count_params, flops_per_token, model_config  # noqa: E402
from genforge.train.config import TrainConfig  # noqa: E402
from genforge.train.data import WindowBatches, gather, mix_seed  # noqa: E402
from genforge.train.engine import bf16_available, train  # noqa: E402
from genforge.train.logs import read_metrics  # noqa: E402
from genforge.train.objectives import ClmObjective, MlmObjective, token_cross_entropy  # noqa: E402

SPECIAL = {"pad": 0, "bos": 1, "eos": 2, "mask": 3}


def bf16_peak(n: int = 2048, seconds: float = 2.0) -> float:
    """Measured bf16 matmul FLOP/s on this machine (n x n @ n x n), the MFU denominator."""
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def make_model(args, attention: str = "sdpa"):
    torch.manual_seed(0)
    cfg = model_config(args.objective, args.preset, vocab_size=args.vocab, max_positions=args.seq_len,
                       special_ids=SPECIAL)
    model = build_model(cfg, args.objective)
    model.set_attn_implementation(attention)
    return model


class EveryPositionMlm(MlmObjective):
    """genforge's MLM objective without its sparse head: every position goes through the output
    projection (the model's plain forward, as the Trainer runs it); the loss is the same."""

    def loss(self, model, batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
        return token_cross_entropy(logits, batch["labels"])


def make_objective(args, every_position: bool = False) -> ClmObjective | MlmObjective:
    if args.objective == "clm":
        return ClmObjective()
    kind = EveryPositionMlm if every_position else MlmObjective
    return kind(mask_id=SPECIAL["mask"], vocab_size=args.vocab, special_ids=sorted(SPECIAL.values()))


def run_genforge(tokens: np.ndarray, args) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(out=Path(tmp), max_steps=args.warmup + args.steps, batch_size=args.batch_size,
                          seq_len=args.seq_len, warmup_steps=2, eval_every=0, save_every=0, log_every=1,
                          bf16=args.bf16, compile=args.compile)
        objective = make_objective(args, args.all_positions)
        batches = WindowBatches(tokens, objective.window_len(args.seq_len), args.batch_size, 1, 0,
                                objective.make_batch)
        train(make_model(args), objective, batches, cfg, Path(tmp))
        rows = {r["step"]: r for r in read_metrics(Path(tmp) / "logs" / "metrics.jsonl") if r["kind"] == "train"}
    first, last = rows[args.warmup], rows[args.warmup + args.steps]  # input tokens (mlm logs the predicted)
    return args.steps * args.batch_size * args.seq_len / (last["elapsed_s"] - first["elapsed_s"])


def run_trainer(tokens: np.ndarray, args) -> float:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    objective = make_objective(args)

    class Windows(torch.utils.data.Dataset):
        """The same kind of random windows, one per item (clm: labels = inputs, HF shifts them itself;
        mlm: the objective's masks, so both runs predict the same share of tokens)."""

        def __len__(self):
            return (args.warmup + args.steps) * args.batch_size

        def __getitem__(self, i):
            start = torch.randint(0, len(tokens) - args.seq_len, (1,),
                                  generator=torch.Generator().manual_seed(mix_seed(0, i)))
            ids = gather(tokens, start, args.seq_len)[0]
            if args.objective == "mlm":
                batch = objective.make_batch(ids[None], torch.Generator().manual_seed(i))
                return {"input_ids": batch["input_ids"][0], "labels": batch["labels"][0]}
            return {"input_ids": ids, "labels": ids}

    class Clock(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, *_, **__):
            self.times.append(time.perf_counter())

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=args.batch_size, max_steps=args.warmup + args.steps,
            learning_rate=1e-3, warmup_steps=2, lr_scheduler_type="cosine", weight_decay=0.1, max_grad_norm=1.0,
            adam_beta2=0.95, bf16=args.bf16, use_cpu=True, torch_compile=args.compile, optim="adamw_torch_fused",
            logging_steps=10**6, save_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=0,
            seed=0)
        model = make_model(args, args.trainer_attention)
        Trainer(model=model, args=targs, train_dataset=Windows(), callbacks=[clock]).train()
    seconds = clock.times[args.warmup + args.steps - 1] - clock.times[args.warmup - 1]
    return args.steps * args.batch_size * args.seq_len / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: few steps, no compile")
    parser.add_argument("--objective", default="clm", choices=("clm", "mlm"),
                        help="causal LM on the Llama preset, or masked LM on the BERT preset")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile, allocator)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each; the best counts")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all usable cores)")
    parser.add_argument("--trainer-attention", default="sdpa", choices=("sdpa", "eager"),
                        help="attention kernel of the Trainer's model (HF's default: sdpa); genforge picks its own")
    parser.add_argument("--all-positions", action="store_true",
                        help="mlm: genforge projects every position, as the Trainer does (no sparse head)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.rounds, args.compile = 4, 2, 1, False
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # keeps the engine from re-deciding the thread count
    args.bf16 = bf16_available(torch.device("cpu"))  # the engine would drop a bf16=True itself; the Trainer would not

    tokens = np.random.default_rng(0).integers(6, args.vocab, 2_000_000, dtype=np.uint16)
    model = make_model(args)
    flops = flops_per_token(model, args.seq_len)
    params = count_params(model)
    peak = bf16_peak()
    print(f"{args.preset}: {params['total'] / 1e6:.2f} M params ({params['non_embedding'] / 1e6:.2f} M non-embedding), "
          f"vocab {args.vocab}, batch {args.batch_size} x {args.seq_len}, {threads} threads, "
          f"compile={args.compile}, Trainer attention {args.trainer_attention}; "
          f"bf16 matmul peak {peak / 1e9:.0f} GFLOP/s")
    precision = "bf16 autocast" if args.bf16 else "fp32 (no native bf16 on this CPU)"
    head = f"; genforge projects {'every position' if args.all_positions else 'the masked positions'}"
    print(f"precision: genforge {precision}, Trainer {precision}{head * (args.objective == 'mlm')}")
    best = {"trainer": 0.0, "genforge": 0.0}
    for r in range(args.rounds):
        for name, fn in (("trainer", run_trainer), ("genforge", run_genforge)):
            tok_s = fn(tokens, args)
            best[name] = max(best[name], tok_s)
            print(f"  round {r + 1} {name:>8}: {tok_s:8.0f} tok/s")
    for name, tok_s in best.items():
        sparse = args.objective == "mlm" and name == "genforge" and not args.all_positions
        note = " (dense-equivalent: counts the head rows it skips)" * sparse
        print(f"{name:>8}: {tok_s:8.0f} tok/s   MFU {flops * tok_s / peak:6.1%} of measured bf16 peak{note}")
    print(f"ratio genforge / Trainer: {best['genforge'] / best['trainer']:.2f}x")


if __name__ == "__main__":
    main()
