"""`genforge gan oracle`: random / MLE / MLE at the best temperature / each GAN variant on the SeqGAN oracle.

The run folder holds mle/ (the engine's run), one folder per variant (checkpoints, logs), samples,
nll_oracle.png (the curve over adversarial epochs), results.json and the manifest. "MLE at the best
temperature" follows Caccia et al. ("Language GANs falling short"): lowering the softmax temperature
trades diversity for quality, so a GAN only helps if it beats that whole curve; we sweep it and report
the temperature minimising NLL-oracle + NLL-test (the point where quality and diversity sum best); the
temperature and the adversarial checkpoints are chosen by that sum on validation samples, never the test rows.
"MLE (last step)" is the MLE generator at the end of its schedule instead of at its best validation
NLL: SeqGAN's own MLE baseline trains a fixed 120 epochs without early stopping, and an over-fitted
generator samples closer to its training rows, which lowers NLL-oracle while NLL-test rises.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from genforge.artifacts import atomic_write_text, write_json, write_manifest
from genforge.config import check_training_memory
from genforge.models.presets import meta_params
from genforge.paradigms.config import OracleConfig
from genforge.paradigms.gan_phases import (
    MLE_MARKER,
    WRITTEN,
    load_weights,
    mle_phase,
    mle_started,
    plot_curves,
    variant_phase,
)
from genforge.paradigms.oracle import LENGTH, START, load_oracle, random_oracle, read_samples
from genforge.paradigms.runs import begin_run, check_run_folder
from genforge.paradigms.sequence import LstmGenerator, mean_nll, sample
from genforge.train.data import mix_seed

TEMPERATURES = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1)
VAL_SIZE = 1000  # oracle samples for checkpoint selection, MLE and adversarial (never the test set)


def score(generator: Any, oracle: Any, test: torch.Tensor, n: int, seed: int, temperature: float = 1.0
          ) -> dict[str, float]:
    """NLL-oracle of `n` fresh samples and NLL-test of the held-out rows, at a sampling temperature."""
    g = torch.Generator().manual_seed(seed)
    samples = sample(generator, n, test.shape[1], START, temperature=temperature, generator=g)
    return {"nll_oracle": mean_nll(oracle, samples, START),
            "nll_test": mean_nll(generator, test, START, temperature=temperature)}


def oracle_data(cfg: OracleConfig) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor, list[Path]]:
    """(oracle, train rows, validation rows, test rows, input files); train rows are the published ones if given."""
    if cfg.oracle is not None:
        oracle = load_oracle(cfg.oracle)
        inputs = [cfg.oracle / "oracle_params.npz"]
        real = cfg.oracle / "real_data.txt"
        if real.is_file():
            train_rows = read_samples(real, oracle.head.out_features, LENGTH)
            inputs.append(real)
        else:
            train_rows = None
    else:
        oracle, train_rows, inputs = random_oracle(cfg.seed), None, []
    g = torch.Generator().manual_seed(mix_seed(cfg.seed, "oracle-samples"))
    if train_rows is None:
        train_rows = sample(oracle, cfg.train_size, LENGTH, START, generator=g)
    val_rows = sample(oracle, min(VAL_SIZE, cfg.test_size), LENGTH, START, generator=g)
    test_rows = sample(oracle, cfg.test_size, LENGTH, START, generator=g)
    return oracle, train_rows, val_rows, test_rows, inputs


def gan_oracle(cfg: OracleConfig) -> dict[str, Any]:
    """Run the benchmark; return {"rows": {name: {"nll_oracle", "nll_test", ...}}, "mle": ..., "gans": ...}."""
    check_run_folder(cfg.out, "gan.oracle", resume=cfg.resume, started=mle_started(cfg.out), marker=MLE_MARKER)
    torch.manual_seed(cfg.seed)
    oracle, train_rows, val_rows, test_rows, inputs = oracle_data(cfg)  # read and checked before --out is touched
    vocab = oracle.head.out_features
    check_training_memory(lambda: meta_params(LstmGenerator, vocab, cfg.embed_size, cfg.hidden_size), cfg,
                          "embed_size", "hidden_size")
    started = begin_run(cfg.out, "gan.oracle", resume=cfg.resume, started=mle_started(cfg.out), marker=MLE_MARKER,
                        written=WRITTEN)
    torch.manual_seed(cfg.seed)
    generator = LstmGenerator(vocab, cfg.embed_size, cfg.hidden_size)
    rows: dict[str, dict[str, float]] = {"random": score(generator, oracle, test_rows, cfg.eval_samples, cfg.seed)}
    mle = mle_phase(generator, train_rows, val_rows, cfg, START, cfg.out / "mle")
    rows["mle"] = score(generator, oracle, test_rows, cfg.eval_samples, cfg.seed)
    if mle["best_step"] != mle["steps"]:
        last = copy.deepcopy(generator)
        load_weights(last, cfg.out / "mle" / "checkpoints" / "latest")
        rows["mle (last step)"] = score(last, oracle, test_rows, cfg.eval_samples, cfg.seed)
    def evaluate(g: Any, temperature: float = 1.0) -> dict[str, float]:
        """Scores on validation samples: what the temperature and the adversarial checkpoints are chosen by."""
        scores = score(g, oracle, val_rows, cfg.eval_samples, mix_seed(cfg.seed, "validation"), temperature)
        return {**scores, "nll_sum": scores["nll_oracle"] + scores["nll_test"]}

    sweep = {t: score(generator, oracle, test_rows, cfg.eval_samples, cfg.seed, t) for t in TEMPERATURES}
    best_t = min(TEMPERATURES, key=lambda t: evaluate(generator, t)["nll_sum"])
    rows[f"mle (T={best_t})"] = sweep[best_t]

    gans, runs = {}, {}
    for variant in cfg.variant:
        runs[variant] = cfg.out / variant
        gen, gans[variant] = variant_phase(variant, generator, train_rows, vocab, cfg, START, runs[variant],
                                           evaluate, select="nll_sum")
        rows[variant] = score(gen, oracle, test_rows, cfg.eval_samples, cfg.seed)
        rows[variant]["best_epoch"] = gans[variant]["best"].get("epoch")
        samples = sample(gen, 50, LENGTH, START, generator=torch.Generator().manual_seed(cfg.seed))
        atomic_write_text(runs[variant] / "samples.txt", "".join(" ".join(map(str, r)) + "\n" for r in samples.tolist()))
    curve = plot_curves(cfg.out, runs, "nll_oracle", {"mle": rows["mle"]["nll_oracle"],
                                                      f"mle T={best_t}": sweep[best_t]["nll_oracle"]})
    results = {"rows": rows, "mle": mle, "temperature_sweep": {str(t): v for t, v in sweep.items()},
               "best_temperature": best_t, "gans": gans, "oracle": "published" if cfg.oracle else "random",
               "vocab": vocab, "length": LENGTH, "train_rows": len(train_rows), "test_rows": len(test_rows),
               "curve": curve.name}
    write_json(cfg.out / "results.json", results)
    print_table(rows, f"gan oracle -> {cfg.out}")
    write_manifest(cfg.out, "gan.oracle", cfg, inputs=inputs, started=started,
                   metrics={name: {k: v for k, v in r.items() if k in ("nll_oracle", "nll_test")}
                            for name, r in rows.items()})
    return results


def print_table(rows: dict[str, dict[str, float]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    columns = sorted({k for r in rows.values() for k in r}, key=lambda k: (k != "nll_oracle", k))
    table.add_column("generator")
    for c in columns:
        table.add_column(c, justify="right")
    for name, r in rows.items():
        table.add_row(name, *(f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in columns))
    Console(stderr=True).print(table)

