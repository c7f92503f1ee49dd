"""Text VAE on tiny-shakespeare lines: genforge's collapse remedies vs a plain VAE, same data and budget.

The data chain (prepare by line -> 1,024-token BPE -> pack) turns each line of tiny-shakespeare into a
sentence. Two `genforge vae train` runs with the same model and steps: the baseline is a plain
Bowman-style VAE without any remedy (KL weight 1 from the start, no word dropout, no free bits),
which typically collapses (KL ~ 0, no active units: the latent space is unused); genforge's defaults
add KL annealing, word dropout and free bits. Printed per run: negative ELBO per token (an upper bound
of the NLL), reconstruction NLL and KL per sentence, active units, time; and the ratios.

    .venv/bin/python benchmarks/bench_vae.py           # the real thing (about 10 min)
    .venv/bin/python benchmarks/bench_vae.py --quick   # smoke: 100 steps of a smaller model
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from runargs import run_args

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def packed_lines(work: Path) -> Path:
    from genforge.data.config import PackConfig, PrepareConfig, TokenizerConfig
    from genforge.data.pack import pack
    from genforge.data.prepare import prepare
    from genforge.data.tokenizer import train_tokenizer

    data, tok = work / "data", work / "tok"
    prepare(PrepareConfig(inputs=[DATA / "tinyshakespeare" / "input.txt"], out=data, split_by="line",
                          min_chars=1, val_fraction=0.05, workers=1))
    train_tokenizer(TokenizerConfig(data=data, out=tok, vocab_size=1024))
    pack(PackConfig(data=data, tokenizer=tok, workers=1))
    return data


def main() -> None:
    args, work = run_args(__doc__, "smoke run (a couple of minutes)", "bench_vae_")
    import json

    from genforge.paradigms.config import VaeConfig
    from genforge.paradigms.vae import vae_train

    data = packed_lines(work)
    steps = 100 if args.quick else 3000
    size = dict(embed_size=128, hidden_size=128) if args.quick else {}
    runs = {"plain VAE": dict(kl_annealing="none", word_dropout=0.0, free_bits=0.0),
            "genforge VAE": {}}
    results = {}
    for name, over in runs.items():
        t0 = time.perf_counter()
        out = vae_train(VaeConfig(data=data, out=work / name.replace(" ", "_"), max_steps=steps,
                                  anneal_steps=max(1, steps * 2 // 3), eval_every=max(1, steps // 6),
                                  save_every=max(1, steps // 6), **size, **over))
        results[name] = {**json.loads((out / "manifest.json").read_text())["metrics"],
                         "seconds": time.perf_counter() - t0}
    print(f"\ntext VAE on tiny-shakespeare lines, {steps} steps each; folders in {work}")
    print(f"{'run':<14} {'-ELBO/tok':>9} {'-ELBO':>8} {'rec NLL':>8} {'KL':>6} {'active':>6} {'min':>5}")
    for name, r in results.items():
        print(f"{name:<14} {r['loss']:>9.3f} {r['neg_elbo']:>8.2f} {r['rec_nll']:>8.2f} {r['kl']:>6.2f} "
              f"{r['active_units']:>6} {r['seconds'] / 60:>5.1f}")
    base, ours = results["plain VAE"], results["genforge VAE"]
    print(f"ratio genforge / plain: -ELBO {ours['loss'] / base['loss']:.3f}, KL {ours['kl'] / max(base['kl'], 1e-9):.1f}x, "
          f"active units {ours['active_units']} vs {base['active_units']}")


if __name__ == "__main__":
    main()
