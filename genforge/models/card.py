"""Model cards: the README.md of a model folder, generated from its manifest and config.json.

A card is what a person reads before using a model: what it is, how well it does, what it was made
from (the lineage table walks the manifest chain back to the hashes of the raw files), the exact
configuration, and three lines to load it. Every stage that writes a model calls
`write_model_card(run_dir, manifest)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from genforge.artifacts import atomic_write_text, lineage, now_iso, sha256_file

PIPELINES = {"clm": ("text-generation", "AutoModelForCausalLM"), "mlm": ("fill-mask", "AutoModelForMaskedLM")}


def pipeline_tag(kind: str) -> str:
    """The Hub's task of a model card: "clm" or "mlm" (an LM objective), else "classifier"."""
    return PIPELINES[kind][0] if kind in PIPELINES else "text-classification"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "-" if value is None else str(value)


def _millions(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} M ({n:,})"


def lineage_rows(manifest: dict[str, Any]) -> list[str]:
    """The Lineage table of a card: one row per manifest from `manifest` back to the raw files, each with the
    names and hashes of its inputs. Every model card (pretrain, finetune, compress) shows it this way."""
    rows = ["| # | stage | created | inputs (sha256, first 12) |", "|---|---|---|---|"]
    for i, m in enumerate(lineage(manifest)):
        inputs = ", ".join(f"`{Path(x['path']).name}` {x['sha256'][:12]}" for x in m.get("inputs", [])[:6])
        more = len(m.get("inputs", [])) - 6
        inputs += f" (+{more} more)" if more > 0 else ""
        rows.append(f"| {i} | {m.get('stage', '?')} | {m.get('created') or '-'} | {inputs or '-'} |")
    return rows


def stage_lineage_rows(stage: str, inputs: list[Path], parent: dict[str, Any] | None, base: Any) -> list[str]:
    """`lineage_rows` for a stage whose manifest is not written yet (it is written last): this run's row with
    its `inputs` hashed, then `parent`'s chain, or a row naming `base` when it came from outside genforge."""
    preview = {"stage": stage, "created": now_iso(), "inputs": [{"path": str(p), "sha256": sha256_file(p)}
                                                                for p in inputs], "parent": parent}
    rows = lineage_rows(preview)
    return rows + ([] if parent else [f"| 1 | (`{base}`, a model from outside genforge) | - | - |"])


def render_model_card(run_dir: Path, manifest: dict[str, Any]) -> str:
    """The card's markdown (YAML front matter + sections) for the model folder `run_dir`."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
    objective = manifest.get("objective", "clm")
    pipeline, auto = PIPELINES.get(objective, PIPELINES["clm"])
    model = manifest.get("model", {})
    front = {"library_name": "transformers", "pipeline_tag": pipeline,
             "tags": ["genforge", manifest.get("stage", "model"), objective]}
    arch = ", ".join(config.get("architectures", [])) or model.get("architecture", "-")
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {run_dir.resolve().name}", "",
             f"A {arch} language model ({'causal' if objective == 'clm' else 'masked'} LM) made by genforge's "
             f"`{manifest.get('stage', '?')}` stage.", "", "## Results", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in manifest.get("metrics", {}).items()]
    lines += ["", "Bits per byte = validation NLL in bits / UTF-8 bytes of the validation text "
              "(tokenizer-independent; for masked LMs it is computed over masked tokens only).", ""]
    if (run_dir / "logs" / "loss.png").is_file():
        lines += ["![loss curve](logs/loss.png)", ""]
    lines += ["## Model", "", "| | |", "|---|---|", f"| architecture | {arch} |",
              f"| parameters | {_millions(model.get('params'))} |",
              f"| non-embedding parameters | {_millions(model.get('non_embedding_params'))} |"]
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "tie_word_embeddings"):
        if key in config:
            lines.append(f"| {key} | {config[key]} |")
    if model.get("base_model"):
        lines.append(f"| continued from | a `{model['base_model'].get('stage')}` model created "
                     f"{model['base_model'].get('created')} |")
    elif (manifest.get("config") or {}).get("model"):  # a checkpoint from outside genforge (no manifest of its own)
        lines.append(f"| continued from | `{manifest['config']['model']}` (from outside genforge) |")
    lines += ["", "## Lineage", "", "Newest first; each row is the manifest of the artifact the row above was made from.",
              "", *lineage_rows(manifest), "", "## Training configuration", "", "```yaml",
              yaml.safe_dump(manifest.get("config") or {}, sort_keys=False).strip(), "```", "",
              "## How to use", "", "```python", f"from transformers import AutoTokenizer, {auto}", "",
              f'tokenizer = AutoTokenizer.from_pretrained("{run_dir}")',
              f'model = {auto}.from_pretrained("{run_dir}")']
    if objective == "clm":
        lines += ['inputs = tokenizer("Once upon a time", return_tensors="pt")',
                  "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=50, do_sample=True)[0]))"]
    else:
        lines += ['inputs = tokenizer(f"The capital of France is {tokenizer.mask_token}.", return_tensors="pt")',
                  "logits = model(**inputs).logits"]
    lines += ["```", "", "Or with genforge: `genforge eval --model RUNDIR --data DATADIR`.", ""]
    return "\n".join(lines)


def write_model_card(run_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write README.md into `run_dir` (atomically) and return its path."""
    path = Path(run_dir) / "README.md"
    atomic_write_text(path, render_model_card(run_dir, manifest))
    return path
