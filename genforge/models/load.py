"""Loading local Hugging Face checkpoints: any folder with config.json + weights, nothing downloaded.

The objective of a model is read from its config (`architectures`), so `genforge eval` and continued
pretraining need no flag to know whether a folder holds a causal or a masked language model. A peft
LoRA adapter folder (`adapter_config.json` naming its base folder) stands for base + adapter: its
config is the base's, and `load_model` merges the adapter in, so every command takes either. A folder
with `compression.json` (quantised, head-pruned or ONNX, from `genforge compress`) is built by
`genforge.compress.load`, so it too loads wherever a model folder is taken.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genforge.errors import ArtifactError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
ADAPTER_CONFIG = "adapter_config.json"
COMPRESSION = "compression.json"  # a folder `genforge compress` made that needs its loader (quantised, ...)


def adapter_base(folder: Path) -> Path | None:
    """The base model folder a peft adapter folder was trained on (None if `folder` is not an adapter)."""
    path = Path(folder) / ADAPTER_CONFIG
    if not path.is_file():
        return None
    try:
        base = Path(json.loads(path.read_text(encoding="utf-8"))["base_model_name_or_path"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise ArtifactError(f"{path} is not a valid peft adapter config") from None
    if not (base / "config.json").is_file():
        raise ArtifactError(f"adapter {folder} needs its base model {base}, which is missing")
    return base


def read_model_config(path: Path) -> dict[str, Any]:
    """config.json of a local model folder, or a one-line ArtifactError saying what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"model {path} is not a folder (expected a local Hugging Face model folder)")
    config_file = path / "config.json"
    base = adapter_base(path)
    if base is not None and not config_file.is_file():
        return read_model_config(base)
    if not config_file.is_file():
        raise ArtifactError(f"model {path} has no config.json: not a Hugging Face model folder")
    if not any((path / name).is_file() for name in (*WEIGHT_FILES, COMPRESSION)):
        raise ArtifactError(f"model {path} has no weights (model.safetensors or pytorch_model.bin)")
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{config_file} is not valid JSON: {e}") from None


def detect_objective(config: dict[str, Any]) -> str:
    """'clm' for a causal LM, 'mlm' for a masked LM, from `architectures` in config.json."""
    archs = config.get("architectures") or []
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs):
        return "clm"
    if any(a.endswith("ForMaskedLM") for a in archs):
        return "mlm"
    if config.get("is_decoder") or config.get("model_type") in ("llama", "gpt2", "mistral", "qwen2", "phi3"):
        return "clm"
    if is_bare_encoder(config):
        raise ArtifactError(f"the model is an encoder without a language-model head ({', '.join(archs)}): "
                            "fine-tune it (`finetune classify`) or continue it with `pretrain --objective mlm`")
    raise ArtifactError(f"cannot tell whether the model is a causal or masked LM (architectures: {archs}); "
                        "expected *ForCausalLM or *ForMaskedLM")


def is_bare_encoder(config: dict[str, Any]) -> bool:
    """An encoder saved without its LM head (e.g. `BertModel`, as every sentence-transformers model is).

    Masked-LM training can still continue from it (domain-adaptive pretraining): its masked-LM class loads
    the encoder and starts a fresh head. An encoder never trained as a masked LM (MiniLM was distilled from
    attention maps) needs hundreds of steps before that head predicts well.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    archs = config.get("architectures") or []
    return (bool(archs) and all(a.endswith("Model") for a in archs) and not config.get("is_decoder")
            and config.get("model_type") in MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def max_positions(config: dict[str, Any] | Any) -> int | None:
    """The longest sequence the model was built for (None if the config does not say)."""
    get = config.get if isinstance(config, dict) else lambda k: getattr(config, k, None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if get(key):
            return int(get(key))
    return None


# architectures whose position ids start at pad_token_id + 1 (RoBERTa's 514 positions hold 512 tokens)
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet")


def fit_tokenizer(tokenizer: Any, config: dict[str, Any] | Any) -> Any:
    """`tokenizer` with `model_max_length` = the model's positions, before it is saved into a model folder.

    HF pipelines and `truncation=True` cut text at `model_max_length`; left at the tokenizer's own
    default (2048) a BERT with 256 positions crashes on a long text and a Llama runs past its context.
    """
    limit = max_positions(config)
    get = config.get if isinstance(config, dict) else lambda k: getattr(config, k, None)
    if limit and get("model_type") in OFFSET_POSITIONS:  # positions start after the padding index
        limit -= (get("pad_token_id") or 0) + 1
    if limit:
        tokenizer.model_max_length = limit
    return tokenizer


def use_generation_config(model: Any, folder: Path) -> Any:
    """`model` with the `generation_config.json` of `folder` (its stop ids: a chat model's [eos, <|im_end|>]),
    when it has one. Models genforge builds itself (compressed folders from their config, an adapter on its
    base) would otherwise keep the defaults of the config, or the base's, and generate past a reply."""
    if (Path(folder) / "generation_config.json").is_file():
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(str(folder))
    return model


def sentence_length(path: Path, default: int = 128) -> int:
    """How many tokens a sentence encoder embeds: its sentence-transformers config's `max_seq_length` (MiniLM:
    256), else `default`. Text past it would be invisible to the embedding."""
    settings = Path(path) / "sentence_bert_config.json"
    try:
        return int(json.loads(settings.read_text(encoding="utf-8"))["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return default

@contextlib.contextmanager
def reading_weights(path: Path) -> Iterator[None]:
    """Turn a failed read of the safetensors file `path` (truncated, or not safetensors) into one ArtifactError."""
    from safetensors import SafetensorError

    from genforge.artifacts import reading

    with reading(path, "re-copy it or retrain", also=(SafetensorError,)):
        yield


def check_weights(folder: Path) -> None:
    """Read the header of every `*.safetensors` file in `folder`, which also checks each file's length.

    A truncated copy then fails as one line naming the file, before any loader reaches it.
    """
    from safetensors import safe_open

    for path in sorted(Path(folder).glob("*.safetensors")):
        with reading_weights(path), safe_open(str(path), framework="pt"):
            pass


def check_finished_run(folder: Path, what: str = "model") -> None:
    """Refuse a genforge run folder without its manifest.json: it holds checkpoints/ or a config.yaml (what only
    genforge writes there), so a genforge command was stopped or killed in it before its end, and its top-level
    weights are an earlier run's or half-copied. Other Hugging Face folders have no manifest and load as they
    are. Called on the models a command is given (not in load_model: a command reloads its own output before
    writing its manifest)."""
    folder = Path(folder)
    marks = [name for name in ("checkpoints", "config.yaml") if (folder / name).exists()]
    if marks and not (folder / "manifest.json").is_file():
        raise ArtifactError(f"{what} {folder} is an unfinished genforge run ({marks[0]} but no manifest.json): "
                            "finish it (its command again, with --resume if it resumes), or give a finished model")


def load_model(path: Path, objective: str | None = None) -> tuple[Any, str]:
    """(model in fp32 with SDPA attention, objective) from a local HF folder; refuses a mismatch.

    An adapter folder gives its base with the adapter merged in (an ordinary model, as fast as the base).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    base = adapter_base(path)
    if base is not None and not (Path(path) / "config.json").is_file():
        from peft import PeftModel

        check_weights(path)
        model, found = load_model(base, objective)
        return use_generation_config(PeftModel.from_pretrained(model, str(path)).merge_and_unload(), path), found
    config = read_model_config(path)
    found = "mlm" if objective == "mlm" and is_bare_encoder(config) else detect_objective(config)
    if objective and objective != found:
        raise ArtifactError(f"model {path} is a {'causal' if found == 'clm' else 'masked'} LM; "
                            f"it cannot be trained with --objective {objective}")
    auto = AutoModelForCausalLM if found == "clm" else AutoModelForMaskedLM
    if (Path(path) / COMPRESSION).is_file():  # quantised, head-pruned or ONNX: built by genforge.compress
        from transformers import AutoConfig

        from genforge.compress.load import load_compressed

        check_weights(path)
        return load_compressed(path, auto, AutoConfig.from_pretrained(path, local_files_only=True)), found
    return from_pretrained(auto, path, dtype=torch.float32), found


def from_pretrained(auto: Any, path: str | Path, **kwargs: Any) -> Any:
    """`auto.from_pretrained`, offline, with SDPA attention where the architecture has it.

    Architectures without an SDPA implementation (MPNet, among others) load with plain attention
    instead of failing; any other load problem is one ArtifactError line naming the folder.
    """
    check_weights(path)
    try:
        with held_load_report(), hf_bars_off():
            try:
                return auto.from_pretrained(str(path), attn_implementation="sdpa", local_files_only=True, **kwargs)
            except ValueError as e:
                if "sdpa" not in str(e).lower() and "scaled_dot_product_attention" not in str(e):
                    raise
                return auto.from_pretrained(str(path), attn_implementation="eager", local_files_only=True,
                                            **kwargs)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"cannot load model {path}: {str(e).splitlines()[0]}") from None
    except RuntimeError as e:
        if not any(s in str(e) for s in ("size mismatch", "ignore_mismatched_sizes")):
            raise
        raise ArtifactError(f"{Path(path) / 'config.json'} does not match the weights beside it (tensor shapes "
                            "differ): the folder is corrupt or mixed up; re-copy it or retrain") from None


def load_state(model: Any, tensors: dict[str, Any], where: str) -> None:
    """Load saved `tensors` into `model`, or a one-line ArtifactError naming what does not fit. Tied weights are
    saved under one of their names (safetensors keeps one copy), so a name missing from the file counts as
    loaded when a name tied to it is there."""
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    tied_elsewhere = {n for names in groups.values() for n in names if any(m in tensors for m in names)}
    missing = [k for k in missing if k not in tied_elsewhere]
    if missing or unexpected:
        raise ArtifactError(f"{where} does not fit the model (missing {sorted(missing)[:3]}, "
                            f"unexpected {sorted(unexpected)[:3]})")


@contextlib.contextmanager
def hf_bars_off() -> Iterator[None]:
    """Silence transformers' progress bars ("Loading weights", "Writing model shards") for a block: a
    bar per load or checkpoint of a local folder, done in a fraction of a second, is noise between
    genforge's own bars and the text that `predict`, `generate` and `chat` print."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def held_load_report() -> Iterator[None]:
    """Hold back transformers' load report (a multi-line table of missing or mismatched weights) while a
    model loads, and show it only if the load succeeds: a failed load is reported as one line instead."""
    logger = logging.getLogger("transformers.modeling_utils")
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        held.append(record)
        return False

    logger.addFilter(hold)
    try:
        yield
    finally:
        logger.removeFilter(hold)
    for record in held:
        logger.handle(record)
