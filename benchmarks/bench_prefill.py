"""Chunked prefill: how long a long prompt joining a busy batch stalls the rows that are decoding.

The `small` preset (random weights, context 2,048) serves `--rows` sequences decoding in one continuous
batch (genforge.serve.batch.SlotBatch, the same object `genforge serve` steps) when a `--prompt`-token
prompt arrives. Baseline: the whole prompt is prefilled in one step (`prefill_chunk` 0, genforge before
chunked prefill); genforge: `--chunk` tokens per step (`genforge serve --prefill-chunk`, default 512).
Per run: the running rows' longest gap between two tokens, their median step time, and the long
prompt's time to its first token (what chunking costs it). Both modes are first warmed up once at the
full prompt length, then run `--runs` times alternately (so load from other processes hits both alike);
each figure is the median over the runs. Prints the ratio of the median longest gaps.

    .venv/bin/python benchmarks/bench_prefill.py [--quick] [--threads 1] [--prompt 1536] [--chunk 256] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from genforge.generate import SamplingParams, load_decoder
from genforge.models.presets import build_model, model_config
from genforge.serve.batch import Seq, SlotBatch


def decoder_of(preset: str, context: int):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    torch.manual_seed(0)
    vocab = 8192
    cfg = model_config("clm", preset, vocab_size=vocab, max_positions=context,
                       special_ids={"pad": 0, "bos": 1, "eos": 2})
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0}, "<pad>")),
                                        pad_token="<pad>")
    return load_decoder(build_model(cfg, "clm").eval(), tokenizer)


def run(decoder, rows: int, prompt_len: int, chunk: int, warm_steps: int) -> dict[str, float]:
    """Step a batch of `rows` decoding sequences; a long prompt arrives after `warm_steps` steps."""
    greedy = SamplingParams(temperature=0)
    running = [Seq(prompt=[10 + i + k for k in range(16)], params=greedy, max_tokens=64) for i in range(rows)]
    long = Seq(prompt=[(7 * k) % 8000 + 10 for k in range(prompt_len)], params=greedy, max_tokens=8)
    batch = SlotBatch(decoder, max_rows=rows + 1, cache_len=2 * decoder.context, prefill_chunk=chunk)
    batch.step(running)
    gaps, arrived, first_token = [], 0.0, 0.0
    step = 0
    while not long.tokens:
        new = []
        if step == warm_steps:
            arrived = time.perf_counter()
            if batch.stageable(long):
                batch.stage(long)
            else:
                new = [long]
        began = time.perf_counter()
        batch.step(new)
        gaps.append(time.perf_counter() - began)
        step += 1
    first_token = time.perf_counter() - arrived
    after = gaps[warm_steps:]
    return {"longest_gap": max(after), "median_step": statistics.median(gaps[:warm_steps]),
            "ttft_long": first_token, "steps_to_join": len(after)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: the `tiny` preset, a 256-token prompt")
    ap.add_argument("--rows", type=int, default=8, help="sequences decoding when the long prompt arrives")
    ap.add_argument("--prompt", type=int, default=1536, help="tokens of the arriving prompt")
    ap.add_argument("--chunk", type=int, default=256, help="prefill chunk of the chunked run")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--runs", type=int, default=5, help="alternating runs of each mode; medians reported (>= 3)")
    args = ap.parse_args()
    if args.runs < 3:
        ap.error("--runs must be at least 3: the median of fewer is at the mercy of one disturbed run")
    torch.set_num_threads(args.threads)
    preset, prompt_len, chunk = ("tiny", 256, 64) if args.quick else ("small", args.prompt, args.chunk)
    decoder = decoder_of(preset, 2048)
    modes = {"whole prompt": 0, "chunked": chunk}
    for c in modes.values():  # warm-up at the full length: kernels and allocator, for both shapes of step
        run(decoder, args.rows, prompt_len, c, 3)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in modes}
    for _ in range(args.runs):
        for name, c in modes.items():
            samples[name].append(run(decoder, args.rows, prompt_len, c, 10))
    results = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in samples.items()}
    print(f"{preset} preset, {args.rows} rows decoding, a {prompt_len}-token prompt arrives; chunk {chunk}; "
          f"{args.threads} thread(s); median of {args.runs} alternating runs")
    print(f"{'run':<14}{'longest gap ms':>16}{'median step ms':>16}{'long TTFT ms':>14}{'steps':>7}"
          "   longest gaps (ms)")
    for name, r in results.items():
        gaps = " ".join(f"{1000 * x['longest_gap']:.0f}" for x in samples[name])
        print(f"{name:<14}{1000 * r['longest_gap']:>16.1f}{1000 * r['median_step']:>16.1f}"
              f"{1000 * r['ttft_long']:>14.1f}{r['steps_to_join']:>7.0f}   {gaps}")
    whole, chunked = results["whole prompt"], results["chunked"]
    print(f"longest stall of the running rows: {whole['longest_gap'] / chunked['longest_gap']:.2f}x shorter chunked; "
          f"the long prompt's first token after {chunked['ttft_long'] / whole['ttft_long']:.2f}x the whole-prompt time")


if __name__ == "__main__":
    main()
