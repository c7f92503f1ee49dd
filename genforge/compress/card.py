"""The README.md model card of a compressed model: what was done, what it cost, how to load it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from genforge.artifacts import atomic_write_text
from genforge.compress.load import read_compression
from genforge.compress.report import layers_note, rows
from genforge.config import to_dict
from genforge.models.card import pipeline_tag, stage_lineage_rows
from genforge.models.load import COMPRESSION


def _usage(out: Path, kind: str, needs_genforge: bool) -> list[str]:
    if kind == "classifier":
        lines = ["```bash", f"genforge predict --model {out} --text 'your text'", "```"]
    elif kind == "clm":
        lines = ["```bash", f"genforge generate --model {out} --prompt 'Once upon a time'",
                 f"genforge chat --model {out}   # a chat model", "```"]
    else:
        lines = ["```python", "from genforge.models.load import load_model", f'model, _ = load_model("{out}")', "```"]
    if needs_genforge:
        lines += ["", f"`{COMPRESSION}` says how genforge rebuilds this model (quantised layers, fewer heads or an "
                  "ONNX graph): load it through genforge (`genforge.models.load.load_model`, "
                  "`genforge.finetune.classifier.load_classifier`), not plain `from_pretrained`."]
    else:
        lines += ["", "A standard Hugging Face folder: plain `from_pretrained` loads it too."]
    return lines


def write_card(out: Path, cfg: Any, report: dict[str, Any], parent: dict[str, Any] | None,
               inputs: list[Path]) -> Path:
    """README.md of the folder; `inputs` are the files its manifest records (hashed in the Lineage table)."""
    out = Path(out)
    kind = report["settings"]["kind"]
    # a bfloat16 folder is standard (its compression.json only says "keep bfloat16" to genforge's loaders)
    needs_genforge = (read_compression(out) or {}).get("loader") not in (None, "bfloat16")
    # No `library_name: transformers` where plain transformers cannot load the folder (the Hub would offer
    # a `from_pretrained` snippet that fails); the tags still say what it is.
    front = {**({} if needs_genforge else {"library_name": "transformers"}), "pipeline_tag": pipeline_tag(kind),
             "tags": ["genforge", "compress", cfg.method] + (["genforge-loader"] if needs_genforge else [])}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {out.resolve().name}", "",
             f"`{cfg.model}` compressed by `genforge compress --method {cfg.method}`; original and compressed "
             "measured in the same run (report.json).", "",
             "| | original | compressed | compressed / original |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in rows(report)]
    note = layers_note(report)
    lines += ["", note[0].upper() + note[1:] + "."] if note else []
    machine = report["machine"]
    lines += ["", f"Speed measured on {machine['processor']} ({machine['capability']}, VNNI "
              f"{'yes' if machine['vnni'] else 'no'}, AVX512-BF16 {'yes' if machine['avx512_bf16'] else 'no'}, AMX "
              f"{'yes' if machine['amx_tile'] else 'no'}) with {machine['threads']} threads: it depends on both.",
              "", "![report](report.png)", ""]
    if (out / "logs" / "loss.png").is_file():
        lines += ["![training loss](logs/loss.png)", ""]
    lines += ["## How to use", "", *_usage(out, kind, needs_genforge), "",
              "## Lineage", "", *stage_lineage_rows("compress", inputs, parent, cfg.model)]
    lines += ["", "## Configuration", "", "```yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False).strip(), "```", ""]
    path = out / "README.md"
    atomic_write_text(path, "\n".join(lines))
    return path
