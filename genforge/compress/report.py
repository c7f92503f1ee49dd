"""The before/after report of `genforge compress`: report.json, a printed table, report.png.

report.json is `{"method", "machine", "original": {...}, "compressed": {...}, "change": {...}}` where
both sides carry the same keys (params, nonzero_params, size_bytes, linear_bytes, latency_ms_p50,
latency_ms_p90, throughput, throughput_unit, and the quality metric: perplexity + bits_per_byte for
LMs, accuracy + macro_f1 for classifiers), and `change` holds compressed / original for each number
(for latency also the speed-up original / compressed).
"""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path
from typing import Any

from genforge.artifacts import write_json

# key, label, lower is better
METRICS = [("params", "parameters", True), ("nonzero_params", "non-zero parameters", True),
           ("size_bytes", "size on disk (MB)", True), ("linear_bytes", "linear weights in memory (MB)", True),
           ("latency_ms_p50", "latency p50, batch 1 (ms)", True), ("latency_ms_p90", "latency p90, batch 1 (ms)", True),
           ("throughput", "throughput", False), ("perplexity", "perplexity", True),
           ("bits_per_byte", "bits per byte", True), ("accuracy", "accuracy", False), ("macro_f1", "macro-F1", False)]
MEGA = ("size_bytes", "linear_bytes")


def machine() -> dict[str, Any]:
    """What the speed numbers depend on: the CPU, its int8/bf16 extensions, threads, torch."""
    import torch

    cpu = torch.cpu
    flags = {name: bool(getattr(cpu, f"_is_{name}_supported", lambda: False)())
             for name in ("vnni", "avx512_bf16", "amx_tile")}
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), model)
    return {"processor": model, "capability": torch.backends.cpu.get_cpu_capability(), **flags,
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def change(original: dict[str, Any], compressed: dict[str, Any]) -> dict[str, float]:
    """compressed / original per number, plus the speed-up (original latency / compressed latency)."""
    out = {}
    for key, _, _ in METRICS:
        a, b = original.get(key), compressed.get(key)
        if isinstance(a, int | float) and isinstance(b, int | float) and a:
            out[key] = b / a
    if compressed.get("latency_ms_p50"):
        out["speedup_p50"] = original["latency_ms_p50"] / compressed["latency_ms_p50"]
    return out


def build_report(method: str, settings: dict[str, Any], original: dict[str, Any],
                 compressed: dict[str, Any]) -> dict[str, Any]:
    return {"method": method, "settings": settings, "machine": machine(), "original": original,
            "compressed": compressed, "change": change(original, compressed)}


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in MEGA:
        return f"{value / 1e6:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"


def rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(label, original, compressed, change) for every metric both sides have."""
    original, compressed, ratio = report["original"], report["compressed"], report["change"]
    out = []
    for key, label, _ in METRICS:
        if key not in original and key not in compressed:
            continue
        if key == "throughput":
            label = f"throughput ({original.get('throughput_unit', '')}, batch)"
        note = f"x{ratio[key]:.3f}" if key in ratio else "-"
        if key == "latency_ms_p50" and "speedup_p50" in ratio:
            note += f" ({speed_words(ratio['speedup_p50'])})"
        out.append((label, _fmt(key, original.get(key)), _fmt(key, compressed.get(key)), note))
    return out


def speed_words(speedup: float) -> str:
    """"2.31x faster", or "1.48x slower" for a speed-up below 1 (a tiny model's int8 can lose to float32)."""
    return f"{speedup:.2f}x faster" if speedup >= 1 else f"{1 / speedup:.2f}x slower"


def layers_note(report: dict[str, Any]) -> str | None:
    """"quantised layers: int4 g64 x12, int4 g32 x2, int8 x1" for int8/int4 runs (what each layer got), else None."""
    layers = report["settings"].get("layers")
    return "quantised layers: " + ", ".join(f"{kind} x{n}" for kind, n in layers.items()) if layers else None


def print_report(report: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=layers_note(report))
    for col in ("", "original", "compressed", "compressed / original"):
        table.add_column(col, justify="left" if not col else "right")
    for row in rows(report):
        table.add_row(*row)
    Console(stderr=True).print(table)


def ratio_colour(ratio: float, lower_is_better: bool) -> str:
    """Green when the compressed model is no worse on a metric (an unchanged accuracy too), red when worse."""
    no_worse = ratio <= 1 if lower_is_better else ratio >= 1
    return "#1b7837" if no_worse else "#b2182b"


def plot_report(report: dict[str, Any], path: Path) -> Path:
    """report.png: one small bar pair (original, compressed) per metric, annotated with the ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [(k, label, lower) for k, label, lower in METRICS
            if isinstance(report["original"].get(k), int | float) and isinstance(report["compressed"].get(k), int | float)
            and k not in ("nonzero_params", "latency_ms_p90")]
    cols = min(4, len(keys))
    rows_n = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.2 * cols, 2.8 * rows_n), dpi=110, squeeze=False)
    for ax, (key, label, lower) in zip(axes.flat, keys, strict=False):
        a, b = report["original"][key], report["compressed"][key]
        scale = 1e6 if key in (*MEGA, "params") else 1.0
        if key == "throughput":
            label = f"throughput ({report['original'].get('throughput_unit', '')})"
        elif key == "params":
            label = "parameters (M)"
        bars = ax.bar(["original", "compressed"], [a / scale, b / scale], color=["#8da0cb", "#fc8d62"])
        ratio = b / a if a else float("nan")
        ax.set_title(f"{label}\nx{ratio:.3f}", fontsize=9, color=ratio_colour(ratio, lower))
        ax.bar_label(bars, fmt="%.4g", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.margins(y=0.2)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(f"genforge compress --method {report['method']}", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(out: Path, report: dict[str, Any]) -> None:
    write_json(Path(out) / "report.json", report)
    plot_report(report, Path(out) / "report.png")
