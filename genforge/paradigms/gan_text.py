"""`genforge gan text`: a text GAN on the sentences of a packed data folder.

Real sequences are the folder's documents cut or padded (with EOS) to `seq_len` tokens, generated
after BOS. The generator is an LSTM or a fresh genforge decoder preset (Llama); it is MLE-pre-trained
by the engine, then each variant trains a copy adversarially. Without an oracle, quality is measured
as the share of generated 4-grams that occur in the training text (`ngram_miss` = 1 - that share,
lower is better, a cheap stand-in for Texygen's BLEU; 4-grams of the text up to EOS, not of the EOS
padding) and diversity as the generator's NLL of the validation sentences (`nll_val`) and the
distinct-4-gram ratio of its samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from genforge.artifacts import atomic_write_text, write_json, write_manifest
from genforge.config import check_training_memory
from genforge.models.presets import meta_params
from genforge.paradigms.config import TextGanConfig
from genforge.paradigms.gan_oracle import print_table
from genforge.paradigms.gan_phases import (
    MLE_MARKER,
    WRITTEN,
    mle_phase,
    mle_started,
    plot_curves,
    variant_phase,
)
from genforge.paradigms.runs import begin_run, check_run_folder
from genforge.paradigms.sequence import LstmGenerator, mean_nll, sample
from genforge.paradigms.vae import read_sentences
from genforge.train.data import read_pack


def fixed_rows(sentences: list[np.ndarray], length: int, eos: int) -> torch.Tensor:
    """Sentences cut to `length` tokens, or ended by EOS and padded with EOS to `length`."""
    rows = np.full((len(sentences), length), eos, dtype=np.int64)
    for i, s in enumerate(sentences):
        rows[i, :min(length, len(s))] = s[:length]
    return torch.from_numpy(rows)


def ngrams(rows: list[list[int]], n: int = 4) -> list[tuple[int, ...]]:
    return [tuple(r[i:i + n]) for r in rows for i in range(len(r) - n + 1)]


def until_eos(rows: list[list[int]], eos: int) -> list[list[int]]:
    """Each fixed-length row up to its first EOS (kept: how a text ends is part of it), without the EOS padding.

    The padding is not text: its 4-grams (EOS EOS EOS EOS, ...) occur in every short training row, so counting
    them let a generator that stops after two random words score an ngram_miss near 0.
    """
    return [r[:r.index(eos) + 1] if eos in r else r for r in rows]


def text_scores(generator: Any, val_rows: torch.Tensor, reference: set, n: int, start: int, eos: int, seed: int
                ) -> dict[str, float]:
    """ngram_miss and distinct_4 of `n` samples' text (up to EOS; `reference`: the training texts' 4-grams), and
    nll_val, the NLL per token of the validation texts (up to EOS, as the 4-grams)."""
    samples = sample(generator, n, val_rows.shape[1], start, generator=torch.Generator().manual_seed(seed)).tolist()
    grams = ngrams(until_eos(samples, eos))
    return {"ngram_miss": 1.0 - sum(g in reference for g in grams) / max(1, len(grams)),
            "distinct_4": len(set(grams)) / max(1, len(grams)),
            "nll_val": mean_nll(generator, val_rows, start, eos=eos)}


def build_generator(cfg: TextGanConfig, pack: dict[str, Any], special: dict[str, int]) -> Any:
    torch.manual_seed(cfg.seed)
    if cfg.generator == "lstm":
        return LstmGenerator(pack["vocab_size"], cfg.embed_size, cfg.hidden_size)
    from genforge.models.presets import build_model, model_config

    config = model_config("clm", cfg.generator, vocab_size=pack["vocab_size"], max_positions=cfg.seq_len + 1,
                          special_ids=special)
    return build_model(config, "clm")


def gan_text(cfg: TextGanConfig) -> dict[str, Any]:
    """MLE + each adversarial variant on the folder's sentences; return {"rows": {name: scores}, ...}."""
    from genforge.data.pack import packed_tokenizer

    check_run_folder(cfg.out, "gan.text", resume=cfg.resume, started=mle_started(cfg.out), marker=MLE_MARKER)
    pack = read_pack(cfg.data)
    tokenizer = packed_tokenizer(cfg.data)
    start, eos = tokenizer.bos_token_id, pack["eos_id"]
    if start is None:
        start = eos  # a tokenizer without BOS: EOS also marks where a text begins
    special = {"bos": start, "eos": eos, "pad": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos}
    train_rows = fixed_rows(read_sentences(cfg.data, "train", pack, cfg.seq_len), cfg.seq_len, eos)
    val_rows = fixed_rows(read_sentences(cfg.data, "val", pack, cfg.seq_len), cfg.seq_len, eos)[:cfg.eval_samples]
    check_training_memory(lambda: meta_params(build_generator, cfg, pack, special), cfg,
                          *(("generator",) if cfg.generator != "lstm" else ("embed_size", "hidden_size")))
    # only now, with the data read: bad data leaves an earlier run in --out whole
    started = begin_run(cfg.out, "gan.text", resume=cfg.resume, started=mle_started(cfg.out), marker=MLE_MARKER,
                        written=WRITTEN)
    reference = set(ngrams(until_eos(train_rows.tolist(), eos)))
    generator = build_generator(cfg, pack, special)

    def evaluate(g: Any) -> dict[str, float]:
        return text_scores(g, val_rows, reference, cfg.eval_samples, start, eos, cfg.seed)

    mle = mle_phase(generator, train_rows, val_rows, cfg, start, cfg.out / "mle")
    rows = {"mle": evaluate(generator)}
    gans, runs = {}, {}
    for variant in cfg.variant:
        runs[variant] = cfg.out / variant
        gen, gans[variant] = variant_phase(variant, generator, train_rows, pack["vocab_size"], cfg, start,
                                           runs[variant], evaluate, select="ngram_miss")
        rows[variant] = evaluate(gen)
        texts = sample(gen, 20, cfg.seq_len, start, generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        atomic_write_text(runs[variant] / "samples.txt",
                          "".join(tokenizer.decode(t[:t.index(eos)] if eos in t else t).replace("\n", " ") + "\n"
                                  for t in texts))
    plot_curves(cfg.out, runs, "ngram_miss", {"mle": rows["mle"]["ngram_miss"]})
    tokenizer.save_pretrained(cfg.out / "tokenizer")
    results = {"rows": rows, "mle": mle, "gans": gans, "train_rows": len(train_rows)}
    write_json(cfg.out / "results.json", results)
    print_table(rows, f"gan text -> {cfg.out}")
    write_manifest(cfg.out, "gan.text", cfg, inputs=[cfg.data / "train.bin", cfg.data / "val.bin"], parent=pack,
                   metrics=rows, started=started)
    return results
