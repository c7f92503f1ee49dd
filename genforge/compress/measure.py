"""What a compressed model costs and gains: parameters, size on disk, latency, throughput, quality.

The original and the compressed model are measured in the same run, on the same inputs, with the
same thread count. Speed rounds alternate between the models and each keeps its best round, so a
burst of load from another process slows one round, not one model. Latency is at batch 1 (decoders:
one decode step of genforge's generator, i.e. ms per generated token; encoders and classifiers: one
forward of one text); throughput is at a serving batch (decoders: tokens/s at batch 8; classifiers:
texts/s at batch 32; masked LMs: tokens/s at batch 8). Quality: perplexity and bits per byte on the
validation split of a packed data folder (LMs), accuracy and macro-F1 on a labelled file (classifiers).
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from genforge.compress.subject import Subject

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".onnx.data")
SAMPLE_TEXTS = ["Shares rose 4% after the company raised its full-year guidance.",
                "The bank cut its dividend as loan losses mounted.",
                "Quarterly revenue was in line with analyst expectations.",
                "Customers can reset their password from the account settings page."]
DECODE_BATCH, CLASSIFY_BATCH, PROMPT_TOKENS, ENCODER_TOKENS = 8, 32, 32, 128


def size_on_disk(folder: Path) -> int:
    """Bytes of the weight files in a model folder (safetensors, ONNX, head), not tokenizer or logs.

    A LoRA adapter folder counts its base model's weights too: the model it loads as (and is compared
    with) is the base with the adapter merged, not the adapter's few tensors alone.
    """
    from genforge.models.load import adapter_base

    own = sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    base = adapter_base(Path(folder))
    return own + (size_on_disk(base) if base is not None else 0)


def parameters(model: nn.Module) -> dict[str, int]:
    """Parameter count (a quantised layer counts its logical weights), non-zero parameters, and the bytes
    the linear layers' weights take in memory (where quantisation shows)."""
    from genforge.compress.qlinear import QLinear

    own = getattr(getattr(model, "body", model), "parameter_counts", None)
    if callable(own):  # an ONNX Runtime body knows its graph's weights; a custom head is still PyTorch
        counts = own()
        head = getattr(model, "head", None)
        if head is not None:
            extra = parameters(head)
            counts = {k: counts[k] + extra[k] for k in counts}
        return counts
    params = {id(p): p for p in model.parameters()}.values()  # a tied weight once
    total = sum(p.numel() for p in params)
    nonzero = sum(int(torch.count_nonzero(p)) for p in params)
    linear_bytes = 0
    for module in model.modules():  # every matmul's weights, a tied head too: each is read per token
        if isinstance(module, QLinear):
            linear_bytes += module.memory_bytes()
            if not module.tied:  # the weights it computes with: a pruned zero stays zero through int8
                weight = module.dequantized()
                bias = [] if module.bias is None else [module.bias]
                total += sum(t.numel() for t in (weight, *bias))
                nonzero += sum(int(torch.count_nonzero(t)) for t in (weight, *bias))
        elif isinstance(module, nn.Linear):
            linear_bytes += sum(p.numel() * p.element_size() for p in module.parameters(recurse=False))
    return {"params": total, "nonzero_params": nonzero, "linear_bytes": linear_bytes}


def lm_quality(subject: Subject, data: Path, *, seq_len: int, batch_size: int, batches: int,
               seed: int) -> dict[str, float]:
    """Loss, perplexity and bits per byte of an LM on the validation split of a packed data folder."""
    from genforge.compress.task import lm_objective
    from genforge.train.data import eval_batches, open_tokens
    from genforge.train.evaluate import bits_per_byte, evaluate_loss

    pack, objective, seq_len = lm_objective(subject, data, seq_len, "to compress")
    window = objective.window_len(seq_len)
    tokens = open_tokens(data / "val.bin", pack["dtype"], window)
    result = evaluate_loss(subject.model, objective, eval_batches(tokens, window, seq_len, batch_size, objective.make_batch,
                                                          max_batches=batches, seed=seed),
                           device=torch.device("cpu"))
    return {"loss": result["loss"], "perplexity": result["perplexity"],
            "bits_per_byte": bits_per_byte(result["loss"], pack["val_tokens"], pack["val_bytes"])}


def classifier_quality(subject: Subject, examples: list[tuple[str, list[str]]], name: str = "model") -> dict[str, float]:
    """Accuracy and macro-F1 of a classifier on labelled examples (a progress bar from 100 texts: a test
    set of thousands takes a minute per model on a CPU)."""
    from genforge.finetune.classifier import predict_probs
    from genforge.finetune.classify import encode_targets
    from genforge.finetune.metrics import report

    info = subject.info
    with tqdm(total=len(examples), unit="text", desc=f"accuracy ({name})", file=sys.stderr,
              disable=len(examples) < 100) as bar:
        probs = predict_probs(subject.model, subject.tokenizer, [t for t, _ in examples], seq_len=info["seq_len"],
                              multi_label=info["multi_label"], batch_size=CLASSIFY_BATCH, progress=bar.update)
    y_true = encode_targets(examples, info["labels"], info["multi_label"]).numpy().astype(int)
    y_pred = (probs > 0.5).astype(int) if info["multi_label"] else probs.argmax(1)
    result = report(y_true, y_pred, info["labels"], info["multi_label"])
    return {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"]}


def _decode_timings(subject: Subject, prompts: list[list[int]], steps: int) -> list[float]:
    """Seconds of each decode step (one token for every row) after the prefill of `prompts`."""
    from genforge.generate.config import SamplingParams
    from genforge.generate.decoder import load_decoder

    decoder = load_decoder(subject.model, subject.tokenizer)
    state = decoder.prefill(prompts, SamplingParams(temperature=0), steps + 1, stop_ids=())
    decoder.decode_step(state)  # the first token comes from the prefill's logits
    times = []
    while not state.done:
        t = time.perf_counter()
        decoder.decode_step(state)
        times.append(time.perf_counter() - t)
    return times


@torch.inference_mode()
def _forward_timings(forward: Callable[[], Any], repeats: int) -> list[float]:
    forward()  # warm-up: first-call allocations and kernel packing
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        forward()
        times.append(time.perf_counter() - t)
    return times


def _speed_fns(subject: Subject, inputs: dict[str, Any], steps: int) -> tuple[Callable, Callable, float, str]:
    """(batch-1 timings, batch timings, items per batch call, throughput unit) for one model."""
    if subject.kind == "clm":
        prompts = inputs["prompts"]
        return (lambda: _decode_timings(subject, prompts[:1], steps),
                lambda: _decode_timings(subject, prompts[:DECODE_BATCH], max(8, steps // 2)),
                DECODE_BATCH, "tokens/s")
    model = subject.model
    if subject.kind == "mlm":
        ids = inputs["ids"]
        one, many = ids[:1], ids[:DECODE_BATCH]
        return (lambda: _forward_timings(lambda: model(input_ids=one), steps),
                lambda: _forward_timings(lambda: model(input_ids=many), max(4, steps // 8)),
                many.numel(), "tokens/s")
    from genforge.finetune.batches import pad

    tokenizer, texts = subject.tokenizer, inputs["texts"]
    ids = tokenizer(texts, truncation=True, max_length=subject.info["seq_len"])["input_ids"]
    batch = [ids[i % len(ids)] for i in range(CLASSIFY_BATCH)]
    many_ids, many_mask = pad(batch, tokenizer.pad_token_id), pad([[1] * len(r) for r in batch], 0)
    singles = [(torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long)) for r in ids]

    @torch.inference_mode()
    def one() -> list[float]:
        model(*singles[0])
        out = []
        for i in range(steps):
            t = time.perf_counter()
            model(*singles[i % len(singles)])
            out.append(time.perf_counter() - t)
        return out

    return one, lambda: _forward_timings(lambda: model(many_ids, many_mask), max(4, steps // 8)), CLASSIFY_BATCH, "texts/s"


def speed(subjects: list[Subject], inputs: dict[str, Any], steps: int, rounds: int = 3) -> list[dict[str, Any]]:
    """Latency p50/p90 at batch 1 and throughput at a serving batch for each model, rounds interleaved."""
    fns = [_speed_fns(s, inputs, steps) for s in subjects]
    best: list[dict[str, Any]] = [{} for _ in subjects]
    with tqdm(total=rounds * len(fns), unit="round", desc="speed", file=sys.stderr) as bar:  # minutes on a big model
        for _ in range(rounds):
            for i, (one, many, items, unit) in enumerate(fns):
                single = one()
                p50, p90 = statistics.median(single) * 1e3, float(np.percentile(single, 90)) * 1e3
                if p50 < best[i].get("latency_ms_p50", math.inf):
                    best[i].update(latency_ms_p50=p50, latency_ms_p90=p90)
                rate = items / statistics.median(many())
                if rate > best[i].get("throughput", 0.0):
                    best[i].update(throughput=rate, throughput_unit=unit)
                bar.update()
    return best


def speed_inputs(subject: Subject, eval_texts: list[str] | None, eval_data: Path | None,
                 seed: int = 0) -> dict[str, Any]:
    """The inputs speed is measured on: prompts/token windows from the eval data, or fixed ones."""
    if subject.kind == "classifier":
        return {"texts": (eval_texts or SAMPLE_TEXTS)[:64]}
    from genforge.models.load import max_positions

    vocab = subject.model.config.vocab_size
    width = PROMPT_TOKENS if subject.kind == "clm" else ENCODER_TOKENS
    width = min(width, (max_positions(subject.model.config) or width) // 2)  # room to decode; an encoder's limit
    g = torch.Generator().manual_seed(seed)
    if eval_data is not None:
        from genforge.train.data import read_pack

        pack = read_pack(eval_data)
        tokens = np.memmap(eval_data / "val.bin", dtype=np.dtype(pack["dtype"]), mode="r")
        starts = torch.randint(0, max(1, len(tokens) - width), (DECODE_BATCH,), generator=g).tolist()
        rows = [np.asarray(tokens[s:s + width], dtype=np.int64) for s in starts]
        ids = torch.from_numpy(np.stack([np.pad(r, (0, width - len(r))) for r in rows]))
    else:
        ids = torch.randint(8, vocab, (DECODE_BATCH, width), generator=g)
    return {"prompts": ids.tolist(), "ids": ids}
