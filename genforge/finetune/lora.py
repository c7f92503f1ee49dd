"""LoRA through `peft`: wrap a model, save the adapter or the merged model, load either back.

An adapter folder is exactly what peft writes (`adapter_config.json` + `adapter_model.safetensors`,
whose `base_model_name_or_path` is the absolute path of the base folder), so plain
`PeftModel.from_pretrained(base, folder)` loads it without genforge. `--merge` folds the low-rank
update into the weights (W + B A * alpha / r) and saves an ordinary HF model folder instead.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from genforge.errors import ArtifactError
from genforge.models.load import adapter_base, hf_bars_off


def apply_lora(model: Any, *, r: int, alpha: float, dropout: float, targets: list[str],
               task_type: str | None, new_modules: list[str] = ()) -> Any:
    """The peft-wrapped model: LoRA on `targets` (default every linear layer but the output), base frozen.

    `task_type` "SEQ_CLS" also trains the classification layer in full (peft's `modules_to_save`),
    "CAUSAL_LM" keeps the LM head frozen, None (a body under a genforge head) adapts the body only.
    `new_modules` (freshly initialised by the load) are trained in full and saved with the adapter.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=list(targets) if targets else "all-linear", task_type=task_type,
                        modules_to_save=list(new_modules) or None)
    try:
        with warnings.catch_warnings():  # peft asks transformers' deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            return get_peft_model(model, config)
    except ValueError as e:  # e.g. a target name that matches no module
        raise ArtifactError(f"LoRA cannot adapt {type(model).__name__}: {str(e).splitlines()[0]} "
                            "(check --lora-targets)") from None


def is_peft(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def save_model(model: Any, out: Path, *, merge: bool) -> Any:
    """Save an HF model (or its LoRA adapter) into `out`; with `merge`, fold LoRA in first. Returns what was saved."""
    if is_peft(model) and merge:
        model = model.merge_and_unload()
    with hf_bars_off():
        model.save_pretrained(out)
    return model


def load_adapted(folder: Path, load_base: Any) -> Any:
    """Base (from `load_base(base_path)`) + the adapter in `folder`, merged for fast inference."""
    from peft import PeftModel

    base = load_base(adapter_base(folder))
    with warnings.catch_warnings():  # as in apply_lora
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        model = PeftModel.from_pretrained(base, str(folder))
    return model.merge_and_unload()
