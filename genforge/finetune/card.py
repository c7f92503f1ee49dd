"""The README.md model card of a fine-tuned run: task, results, how it was trained, how to load it.

Pretraining's card (`genforge.models.card`) describes language models; a classifier or a LoRA adapter
needs different loading instructions, so fine-tuning renders its own, from the same ingredients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from genforge.artifacts import atomic_write_text
from genforge.config import to_dict
from genforge.models.card import stage_lineage_rows


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else ("-" if value is None else str(value))


def _usage(task: str, run_dir: Path, adapter: bool, head: str) -> list[str]:
    if task == "classify":
        lines = ["```bash", f"genforge predict --model {run_dir} --text 'your text'", "```", ""]
        if head == "linear" and not adapter:
            lines += ["Plain transformers (a standard sequence-classification folder):", "", "```python",
                      "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
                      f'model = AutoModelForSequenceClassification.from_pretrained("{run_dir}")',
                      f'tokenizer = AutoTokenizer.from_pretrained("{run_dir}")', "```"]
        elif adapter:
            lines += ["A LoRA adapter on the base model named in `adapter_config.json`; with transformers + peft "
                      "(labels from `classifier.json`): see docs/finetune.md."]
        else:
            lines += ["A body (`AutoModel`) + `head.safetensors`: load with "
                      "`genforge.finetune.classifier.load_classifier(folder)`."]
        return lines
    if adapter:  # peft does not read the adapter's generation_config.json: without it, replies run on
        return ["```python", "from peft import AutoPeftModelForCausalLM",
                "from transformers import AutoTokenizer, GenerationConfig", "",
                f'model = AutoPeftModelForCausalLM.from_pretrained("{run_dir}")',
                f'tokenizer = AutoTokenizer.from_pretrained("{run_dir}")',
                f'model.generation_config = GenerationConfig.from_pretrained("{run_dir}")  # stops at <|im_end|>',
                'messages = [{"role": "user", "content": "Hello"}]',
                'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", '
                'return_dict=True)',
                "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=100)[0]))", "```", "",
                f"Or: `genforge chat --model {run_dir}`."]
    return ["```bash", f"genforge chat --model {run_dir}", "```"]


def write_card(run_dir: Path, task: str, cfg: Any, metrics: dict[str, Any], parent: dict[str, Any] | None,
               inputs: list[Path], report: dict[str, Any] | None = None) -> Path:
    """README.md of the run; `inputs` are the data files its manifest records (hashed in the Lineage table)."""
    run_dir = Path(run_dir)
    adapter = bool(getattr(cfg, "lora_r", 0)) and not getattr(cfg, "merge", False)
    head = getattr(cfg, "head", "linear")
    # a custom head lives in head.safetensors, which no HF loader reads: no library the Hub would offer a
    # snippet for (it would load the body alone); the tag says what loads it
    custom = task == "classify" and head != "linear"
    front = {**({} if custom else {"library_name": "peft" if adapter else "transformers"}),
             "pipeline_tag": "text-classification" if task == "classify" else "text-generation",
             "tags": ["genforge", "finetune", task] + (["lora"] if getattr(cfg, "lora_r", 0) else [])
             + (["genforge-loader"] if custom else [])}
    kind = f"LoRA (r={cfg.lora_r}){' merged' if cfg.merge else ' adapter'}" if cfg.lora_r else "full fine-tuning"
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {run_dir.resolve().name}", "",
             f"A `{task}` model fine-tuned by genforge from `{cfg.model}` ({kind}).", "",
             "## Results (validation)", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
    if report:
        lines += ["", "| class | precision | recall | f1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {c} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
                  for c, r in report["per_class"].items()]
    for png, title in (("logs/confusion.png", "confusion matrix"), ("logs/loss.png", "loss curve")):
        if (run_dir / png).is_file():
            lines += ["", f"![{title}]({png})"]
    lines += ["", "## Lineage", "", *stage_lineage_rows("finetune", inputs, parent, cfg.model)]
    lines += ["", "## Configuration", "", "```yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False).strip(), "```",
              "", "## How to use", "", *_usage(task, run_dir, adapter, head), ""]
    path = run_dir / "README.md"
    atomic_write_text(path, "\n".join(lines))
    return path
