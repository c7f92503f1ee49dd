"""Decode speed of genforge's generator vs `model.generate` of transformers, and the memory-bandwidth bound.

Same model, same prompts, greedy, KV cache on both sides, EOS disabled so every run makes exactly
`--tokens` tokens. Decode tokens/s = batch / median time of one decode step (prompt excluded; HF's
steps are timed through its streamer hook), best of a few interleaved runs: the median and the
interleaving keep bursts of load from other processes on a shared machine out of the comparison.
Each dtype is compared with its HF counterpart (`model.generate` on a copy of the model in that dtype):
genforge float32 must produce HF float32's tokens exactly; the bfloat16 rows report how many of HF
bfloat16's tokens they match (different kernels round differently).
The bound: at batch 1 every decode step reads all weights once, so tokens/s <= copy bandwidth /
weight bytes, with the bandwidth measured here by copying a large tensor (batch B: B times that).

    .venv/bin/python benchmarks/bench_generate.py [--quick] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from functools import partial

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from genforge.generate.config import SamplingParams  # noqa: E402
from genforge.generate.decoder import Decoder  # noqa: E402
from genforge.generate.llama import LlamaRunner, from_hf  # noqa: E402
from genforge.models.presets import build_model, count_params, model_config  # noqa: E402

VOCAB, PROMPT = 8192, 32
GREEDY = SamplingParams(temperature=0)


def make_model(preset: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = model_config("clm", preset, vocab_size=VOCAB, max_positions=2048,
                       special_ids={"pad": 0, "bos": 1, "eos": 2})
    return build_model(cfg, "clm").eval()


class StepClock:
    """A transformers streamer that only notes the time of each `put` (the prompt, then one per step)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def hf_generate(model, ids: torch.Tensor, n: int) -> tuple[list[float], torch.Tensor]:
    """Decode step times of model.generate (from its streamer calls) and the new tokens."""
    clock = StepClock()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, use_cache=True, eos_token_id=None, pad_token_id=0, streamer=clock)
    steps = [b - a for a, b in zip(clock.times[1:], clock.times[2:], strict=False)]
    return steps, out[:, ids.shape[1]:]


def gf_generate(decoder: Decoder, ids: torch.Tensor, n: int) -> tuple[list[float], torch.Tensor]:
    """Decode step times of genforge's decoder (each step: forward of the last token + sampling)."""
    state = decoder.prefill(ids.tolist(), GREEDY, n, stop_ids=())
    decoder.decode_step(state)  # the first token comes from the prefill logits
    steps = []
    while not state.done:
        t = time.perf_counter()
        decoder.decode_step(state)
        steps.append(time.perf_counter() - t)
    return steps, torch.tensor(state.tokens)


def copy_bandwidth(mb: int = 256) -> float:
    """Bytes moved per second (read + write) by copying a tensor far larger than the caches."""
    src = torch.ones(mb * 2**20 // 4)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.numel() * 4 / best


def weight_bytes(runner: LlamaRunner) -> int:
    """Bytes a decode step reads: every matrix and norm (the embedding table only as one row per token)."""
    w = runner.weights
    tensors = [w.norm, w.lm_head] + [t for lw in w.layers for t in vars(lw).values() if t is not None]
    return sum(t.numel() * t.element_size() for t in tensors)


def bench_model(preset: str, batches: list[int], n: int, repeats: int, dtypes: list[str]) -> None:
    model = make_model(preset)
    params = count_params(model)["total"]
    tokenizer = None  # token ids in, token ids out: no tokenizer involved
    hf_models = {d: copy.deepcopy(model).to(getattr(torch, d)) for d in dtypes}
    decoders = {d: Decoder(LlamaRunner(from_hf(model, getattr(torch, d)), VOCAB), tokenizer, (), 0, None)
                for d in dtypes}
    bw = copy_bandwidth()
    wbytes = weight_bytes(decoders["float32"].runner)
    print(f"\n== preset {preset}: {params / 1e6:.1f} M params, {wbytes / 2**20:.1f} MiB fp32 weights read per step; "
          f"copy bandwidth {bw / 1e9:.1f} GB/s (read+write) -> batch-1 bound {bw / wbytes:.0f} tokens/s (fp32), "
          f"{torch.get_num_threads()} threads")
    print(f"{'batch':>5} {'engine':<22} {'tok/s':>8} {'vs HF':>6} {'% bound':>8}  tokens")
    for batch in batches:
        ids = torch.randint(6, VOCAB, (batch, PROMPT), generator=torch.Generator().manual_seed(batch))
        engines = {}
        for d in dtypes:  # each genforge row right after its HF counterpart
            engines[f"HF generate {d}"] = partial(hf_generate, hf_models[d], ids)
            engines[f"genforge {d}"] = partial(gf_generate, decoders[d], ids)
        best: dict[str, float] = {}
        outputs: dict[str, torch.Tensor] = {}
        for _ in range(repeats):  # interleaved, best of
            for name, fn in engines.items():
                steps, outputs[name] = fn(n)
                best[name] = max(best.get(name, 0.0), batch / statistics.median(steps))
        for name, rate in best.items():
            dtype = name.split()[-1]
            hf = f"HF generate {dtype}"
            bound = batch * bw / (wbytes * getattr(torch, dtype).itemsize / 4)
            same = int((outputs[name] == outputs[hf]).sum())
            total = outputs[hf].numel()
            note = "reference" if name == hf else ("identical" if same == total else f"{same}/{total} same")
            print(f"{batch:>5} {name:<22} {rate:>8.0f} {rate / best[hf]:>5.2f}x {rate / bound:>7.0%}  {note}")
        if not torch.equal(outputs["genforge float32"], outputs["HF generate float32"]):
            raise SystemExit("genforge float32 greedy tokens differ from model.generate")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small preset, batch 1 and 8, 32 tokens")
    ap.add_argument("--tokens", type=int, default=None, help="new tokens per sequence (default 128; quick 32)")
    ap.add_argument("--threads", type=int, nargs="*", default=None, help="torch thread counts to try")
    args = ap.parse_args()
    n = args.tokens or (32 if args.quick else 128)
    presets = ["small"] if args.quick else ["small", "base"]
    repeats = 2 if args.quick else 3
    dtypes = ["float32", "bfloat16"]
    for threads in args.threads or [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        for preset in presets:
            bench_model(preset, [1, 8], n, repeats, dtypes)


if __name__ == "__main__":
    main()
