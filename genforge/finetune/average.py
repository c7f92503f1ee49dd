"""Weight averaging of fine-tuned models: WiSE-FT and model soups, one model out.

Fine-tunings of one pretrained model (a normally and an adversarially trained classifier, or runs with
other seeds or learning rates) stay in one basin of the loss, so a weighted average of their weights is a
working model, often better than each: WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of zero-shot
models") keeps most of a robust fine-tuning's robustness with the other's accuracy, and a uniform "soup"
of several runs (Wortsman et al. 2022, "Model soups") beats its best ingredient. Unlike an ensemble it
costs nothing at inference: the result has the shape of its ingredients.

Every top-level `*.safetensors` file is averaged (the model, and a custom classification head); the
other files (config, tokenizer, classifier.json) come from the first model, whose manifest is the parent.
LoRA adapters and compressed folders are refused: merge (`--merge`) or average before compressing.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from genforge.artifacts import (
    MANIFEST,
    atomic_write_bytes,
    atomic_write_text,
    begin_output,
    read_manifest,
    sha256_file,
    write_manifest,
)
from genforge.errors import ArtifactError
from genforge.finetune.config import AverageConfig
from genforge.models.load import ADAPTER_CONFIG, COMPRESSION, reading_weights

NOT_COPIED = {MANIFEST, "config.yaml", "README.md"}  # written anew for the average
# What must agree (architecture, labels, head); provenance such as the base model's path may differ:
# a model fine-tuned further from another is a fine ingredient (WiSE-FT of adversarial fine-tuning).
MUST_MATCH = {"config.json": None, "classifier.json": ("head", "labels", "multi_label", "decoder")}


def weights_of(cfg: AverageConfig) -> list[float]:
    """The --weight values normalised to sum 1. Scaled by the largest first: the sum of huge weights (1e308
    twice) would overflow to inf and every weight become 0, an all-zero model."""
    raw = cfg.weight or [1.0] * len(cfg.model)
    scaled = [w / max(raw) for w in raw]
    return [w / sum(scaled) for w in scaled]


def check_ingredients(folders: list[Path]) -> list[str]:
    """The names of the weight files every folder has; refuses what cannot be averaged, naming the problem."""
    names = None
    expected = {name: read_json(folders[0] / name, keys) for name, keys in MUST_MATCH.items()}
    for folder in folders:
        if not folder.is_dir():
            raise ArtifactError(f"model folder {folder} does not exist")
        if (folder / ADAPTER_CONFIG).is_file():
            raise ArtifactError(f"{folder} is a LoRA adapter: average merged models (train with --merge)")
        if (folder / COMPRESSION).is_file():
            raise ArtifactError(f"{folder} is compressed: average the original models, then compress the average")
        found = sorted(p.name for p in folder.glob("*.safetensors"))
        if not found:
            raise ArtifactError(f"{folder} has no *.safetensors weights")
        if names is not None and found != names:
            raise ArtifactError(f"{folder} has weight files {found}, {folders[0]} has {names}: not the same model")
        names = found
        for name, keys in MUST_MATCH.items():
            if read_json(folder / name, keys) != expected[name]:
                raise ArtifactError(f"{folder}/{name} differs from {folders[0]}/{name}: only models of one "
                                    "architecture and label set can be averaged")
    return names


def read_json(path: Path, keys: tuple[str, ...] | None) -> Any:
    """The JSON object at `path` restricted to `keys` (None: all but `_name_or_path`); None if absent."""
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} is corrupt: {e}") from None
    if not isinstance(found, dict):
        return found
    return {k: v for k, v in found.items() if (k in keys if keys else k != "_name_or_path")}


def average_file(paths: list[Path], weights: list[float]) -> dict[str, torch.Tensor]:
    """The weighted average of one safetensors file's tensors (float32 sums; integer buffers must agree)."""
    from safetensors.torch import load_file

    tensors = []
    for path in paths:
        with reading_weights(path):
            tensors.append(load_file(str(path)))
    first = tensors[0]
    out = {}
    for key, value in first.items():
        for path, other in zip(paths[1:], tensors[1:], strict=True):
            if key not in other or other[key].shape != value.shape:
                raise ArtifactError(f"{path} lacks {key} of shape {tuple(value.shape)}: not the same model")
            if not value.is_floating_point() and not torch.equal(other[key], value):
                raise ArtifactError(f"{path}: the integer tensor {key} differs from {paths[0]}'s")
        if value.is_floating_point():
            total = sum(w * t[key].float() for w, t in zip(weights, tensors, strict=True))
            out[key] = total.to(value.dtype).contiguous()
        else:
            out[key] = value
    extra = set().union(*(t.keys() for t in tensors[1:])) - first.keys()
    if extra:
        raise ArtifactError(f"{paths[0]} lacks {sorted(extra)[:3]} that other models have: not the same model")
    return out


def average(cfg: AverageConfig) -> Path:
    """Average `cfg.model` with `cfg.weight` into `cfg.out`; return the folder."""
    from safetensors.torch import save

    started = time.time()
    folders = [Path(m) for m in cfg.model]
    names = check_ingredients(folders)
    weights = weights_of(cfg)
    # Every ingredient is read before the output is touched: a bad one leaves an earlier average in --out whole.
    averaged = {name: average_file([f / name for f in folders], weights) for name in names}
    parents = [read_manifest(f) if (f / MANIFEST).is_file() else None for f in folders]
    begin_output(cfg.out, "finetune.average")
    for stale in cfg.out.glob("*.safetensors"):  # a rerun into a folder that held another model
        stale.unlink()
    for item in folders[0].iterdir():
        if item.is_file() and item.suffix != ".safetensors" and item.name not in NOT_COPIED:
            shutil.copyfile(item, cfg.out / item.name)
    for name, tensors in averaged.items():
        atomic_write_bytes(cfg.out / name, save(tensors, metadata={"format": "pt"}))
    ingredients = [{"path": str(f.resolve()), "weight": w, "sha256": sha256_file(f / names[0]),
                    "metrics": (p or {}).get("metrics", {})} for f, w, p in zip(folders, weights, parents, strict=True)]
    write_card(cfg.out, ingredients, parents[0], folders[0])
    write_manifest(cfg.out, "finetune.average", cfg, parent=parents[0], started=started,
                   extra={"ingredients": ingredients})
    print(f"averaged {len(folders)} models (weights {', '.join(f'{w:.3g}' for w in weights)}) -> {cfg.out}")
    return cfg.out


def write_card(out: Path, ingredients: list[dict[str, Any]], parent: dict[str, Any] | None, first: Path) -> None:
    """README.md: what was averaged with which weights, each ingredient's recorded metrics, how to load it;
    with the front matter (library, task, tags) and Lineage table every genforge model card has."""
    import yaml

    from genforge.models.card import pipeline_tag, stage_lineage_rows
    from genforge.models.load import detect_objective, read_model_config

    classifier = (out / "classifier.json").is_file()
    # a custom head (head.safetensors) is read by genforge alone: no library the Hub would offer a snippet for
    custom = classifier and (read_json(out / "classifier.json", ("head",)) or {}).get("head", "linear") != "linear"
    front = {**({} if custom else {"library_name": "transformers"}),
             "pipeline_tag": pipeline_tag("classifier" if classifier else detect_objective(read_model_config(out))),
             "tags": ["genforge", "finetune", "average"] + (["genforge-loader"] if custom else [])}
    keys = list(dict.fromkeys(k for i in ingredients for k, v in i["metrics"].items() if isinstance(v, int | float)))
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {out.resolve().name}", "",
             f"The weighted average of {len(ingredients)} fine-tuned models' weights "
             "(WiSE-FT / model soup), made by `genforge finetune average`.", "",
             "| model | weight | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    lines += [f"| `{i['path']}` | {i['weight']:.4g} | " + " | ".join(f"{i['metrics'].get(k, '-'):.4g}"
              if isinstance(i["metrics"].get(k), int | float) else "-" for k in keys) + " |" for i in ingredients]
    lines += ["", "Metrics are each ingredient's own (validation); measure the average on your data.", "",
              "## Lineage (the first model)", "", *stage_lineage_rows("finetune.average", [], parent, first)]
    usage = (f"genforge predict --model {out} --text 'your text'" if classifier
             else f"genforge chat --model {out}   # or transformers' from_pretrained(\"{out}\")")
    lines += ["", "## How to use", "", "```bash", usage, "```", ""]
    atomic_write_text(out / "README.md", "\n".join(lines))
