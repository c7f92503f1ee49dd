"""Self-supervised pretraining: a packed data folder in, a Hugging Face model folder out.

`pretrain(cfg)` wires the pieces together and leaves the loop to the engine: read and check the
packed data, build a preset model (or load a local checkpoint to continue from), pick the objective
(causal LM on a Llama decoder, masked LM on a BERT encoder), train, then export the best checkpoint
as a standard HF folder with the data's tokenizer, a manifest (lineage back to the raw files) and a
model card. Under torchrun every process runs this function; only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from genforge.adversarial.perturb import wrap_adversarial
from genforge.artifacts import (
    MANIFEST,
    begin_output,
    check_output,
    now_iso,
    read_manifest,
    sha256_file,
    write_manifest,
)
from genforge.config import check_training_memory, flag_values, to_dict
from genforge.errors import ArtifactError, ConfigError, DataError
from genforge.models.load import (
    check_weights,
    detect_objective,
    fit_tokenizer,
    load_model,
    max_positions,
    read_model_config,
)
from genforge.models.presets import SIZE_KEYS, build_model, config_params, count_params, model_config
from genforge.train import distributed
from genforge.train.checkpoint import find_checkpoint
from genforge.train.config import PretrainConfig
from genforge.train.data import WindowBatches, eval_batches, open_tokens, read_pack
from genforge.train.engine import TrainResult, checkpoint_exists, train
from genforge.train.logs import plot_loss
from genforge.train.objectives import ClmObjective, MlmObjective


def special_token_ids(tokenizer: Any, *, need_mask: bool, where: Path) -> dict[str, int]:
    """pad/bos/eos/mask ids of a tokenizer; a masked LM cannot train without a mask token."""
    ids = {name: getattr(tokenizer, f"{name}_token_id", None) for name in ("pad", "bos", "eos", "mask")}
    if need_mask and ids["mask"] is None:
        raise DataError(f"tokenizer {where} has no mask token: masked LM needs one (retrain it with genforge)")
    return {k: v for k, v in ids.items() if v is not None}


def check_vocab(model_vocab: int, pack: dict[str, Any], model_path: Path | str) -> None:
    if pack["vocab_size"] > model_vocab:
        raise DataError(f"the data's tokenizer has {pack['vocab_size']} tokens but model {model_path} only "
                        f"{model_vocab}: pack the data with the model's tokenizer")


def tokenizer_differs(folder: Path, data_tokenizer: Any) -> bool:
    """True when `folder` holds a tokenizer with another vocabulary than the data's (False when it holds none)."""
    from transformers import AutoTokenizer

    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
        return False
    return AutoTokenizer.from_pretrained(folder).get_vocab() != data_tokenizer.get_vocab()


def check_same_tokenizer(model_path: Path, data_tokenizer: Any) -> None:
    """Continued pretraining must use the model's own tokenizer, or every token id means something else."""
    if tokenizer_differs(model_path, data_tokenizer):
        raise DataError(f"model {model_path} has a different tokenizer than the data: pack the data with "
                        f"the model's tokenizer (genforge data pack --tokenizer {model_path})")


def fresh_config(cfg: PretrainConfig, pack: dict[str, Any], special: dict[str, int]) -> Any:
    """The HF config of the model a run from scratch builds from `cfg`'s --preset and size flags."""
    return model_config(cfg.objective, cfg.preset, vocab_size=pack["vocab_size"], max_positions=cfg.seq_len,
                        special_ids=special, dropout=cfg.dropout, overrides={k: getattr(cfg, k) for k in SIZE_KEYS})


def size_flags(cfg: PretrainConfig) -> list[str]:
    """The fields that size a fresh model: --preset and the size flags given (0 = the preset's)."""
    return ["preset", *(k for k in SIZE_KEYS if getattr(cfg, k))]


# config.json keys that define a model's shape; and those its --dropout sets (Llama's; BERT's)
ARCHITECTURE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                     "intermediate_size")
DROPOUT_KEYS = ("attention_dropout", "hidden_dropout_prob", "attention_probs_dropout_prob")


def check_resumed_model(cfg: PretrainConfig, saved: dict[str, Any], pack: dict[str, Any], special: dict[str, int]
                        ) -> None:
    """Refuse a resume whose model flags (--preset, the size flags, --model, --dropout) describe another model
    than the checkpoint's `saved` config.json: the resumed model is rebuilt from its checkpoint, so they would
    be silently ignored. Flags left at their defaults take the checkpoint's (`--resume --max-steps 4000`
    alone continues any run); flags that are no part of the model (steps, time, lr schedule, evaluation,
    seq-len within the model's positions) may change on resume."""
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    expected, source = {}, ""
    if cfg.model is not None:
        expected, source = read_model_config(cfg.model), f"--model {cfg.model}"
    elif any(getattr(cfg, k) != defaults[k] for k in ("preset", *SIZE_KEYS)):
        expected = fresh_config(cfg, pack, special).to_dict()
        source = flag_values(cfg, *size_flags(cfg))
    # config.json key -> (the value the flags give it, those flags)
    wanted = {k: (expected[k], source) for k in ARCHITECTURE_KEYS if k in expected}
    if cfg.dropout != defaults["dropout"]:
        wanted.update({k: (cfg.dropout, flag_values(cfg, "dropout")) for k in DROPOUT_KEYS})
    for key, (value, flags) in wanted.items():
        if key in saved and saved[key] != value:
            raise ConfigError(f"--resume: {key} {value} (from {flags}) differs from the checkpoint's {saved[key]}; "
                              "resume with the run's own sizes or write to a new --out")


def prepare_model(cfg: PretrainConfig, pack: dict[str, Any], tokenizer: Any, special: dict[str, int]
                  ) -> tuple[Any, dict[str, Any] | None]:
    """The model to train and, when continuing a genforge model, that model's manifest (for lineage)."""
    if cfg.resume:  # the architecture comes from the checkpoint; its weights are loaded by the engine
        from transformers import AutoConfig

        latest = find_checkpoint(cfg.out / "checkpoints" / "latest")  # checked by pretrain(): not None
        saved = read_model_config(latest)
        found = detect_objective(saved)
        if found != cfg.objective:
            raise ConfigError(f"{cfg.out} holds a '{found}' run; resume it with --objective {found}")
        check_resumed_model(cfg, saved, pack, special)
        check_weights(latest)
        torch.manual_seed(cfg.seed)
        model = build_model(AutoConfig.from_pretrained(latest), cfg.objective)
        # The same checks as a fresh run on these data, here against the tokenizer the run started with.
        if tokenizer_differs(cfg.out, tokenizer):
            raise DataError(f"{cfg.out} was trained on data of another tokenizer than {cfg.data}: resume it "
                            "with the data it started on, or drop --resume to start anew")
        check_vocab(model.config.vocab_size, pack, cfg.out)
        base = cfg.model
    elif cfg.model:
        model, _ = load_model(cfg.model, cfg.objective)
        check_vocab(model.config.vocab_size, pack, cfg.model)
        check_same_tokenizer(cfg.model, tokenizer)
        base = cfg.model
    else:
        config = fresh_config(cfg, pack, special)
        check_training_memory(lambda: config_params(config, cfg.objective), cfg, *size_flags(cfg))
        torch.manual_seed(cfg.seed)
        model = build_model(config, cfg.objective)
        base = None
    limit = max_positions(model.config)
    if limit and cfg.seq_len > limit:
        raise ConfigError(f"--seq-len {cfg.seq_len} is longer than the model's {limit} positions; lower it")
    if cfg.objective == "clm" and model.generation_config is not None:
        for name in ("bos", "eos", "pad"):
            if name in special:
                setattr(model.generation_config, f"{name}_token_id", special[name])
    parent_model = None
    if base is not None and (Path(base) / "manifest.json").is_file():
        parent_model = read_manifest(base)
    return model, parent_model


def make_objective(cfg: PretrainConfig, pack: dict[str, Any], tokenizer: Any, special: dict[str, int]) -> Any:
    if cfg.objective == "clm":
        return ClmObjective()
    return MlmObjective(mask_id=special["mask"], vocab_size=pack["vocab_size"],
                        special_ids=sorted(set(tokenizer.all_special_ids)), probability=cfg.mlm_probability)


def export(cfg: PretrainConfig) -> None:
    """RUNDIR top level = the best checkpoint (lowest val loss) as an HF folder (the tokenizer is there already)."""
    best = cfg.out / "checkpoints" / "best"
    source = best if (best / "model.safetensors").is_file() else cfg.out / "checkpoints" / "latest"
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, cfg.out / name)


def run_metrics(result: TrainResult, params: dict[str, int]) -> dict[str, Any]:
    best = result.best or result.last or {}
    return {
        "val_loss": best.get("loss"), "val_perplexity": best.get("perplexity"),
        "val_bits_per_byte": best.get("bits_per_byte"), "best_step": result.best_step,
        "train_loss": None if math.isnan(result.train_loss) else result.train_loss,
        "steps": result.steps, "tokens": result.tokens, "train_seconds": round(result.seconds, 2),
        "tokens_per_s": round(result.tokens / result.seconds, 1) if result.seconds else None,
        "stop_reason": result.stop_reason, "params": params["total"],
        "non_embedding_params": params["non_embedding"],
    }


def print_summary(out: Path, metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"pretrain -> {out}", show_header=False)
    for key in ("val_loss", "val_perplexity", "val_bits_per_byte", "best_step", "steps", "tokens",
                "tokens_per_s", "train_seconds", "stop_reason", "params"):
        value = metrics.get(key)
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console(stderr=True).print(table)


def pretrain(cfg: PretrainConfig) -> Path:
    """Pretrain a model on `cfg.data`; return the run folder (a loadable HF model folder)."""
    from genforge.data.pack import packed_tokenizer
    from genforge.models.card import write_model_card

    pack = read_pack(cfg.data)
    if cfg.resume and not checkpoint_exists(cfg.out):
        raise ArtifactError(f"nothing to resume: {cfg.out}/checkpoints/latest does not exist; drop --resume")
    redo = not cfg.resume and checkpoint_exists(cfg.out)
    if redo and not (cfg.out / MANIFEST).is_file():
        raise ArtifactError(f"{cfg.out} holds an unfinished run: add --resume to continue it, or choose another --out")
    check_output(cfg.out, "pretrain")  # here on every process: only the main one calls begin_output below
    if cfg.model is not None:
        read_model_config(cfg.model)  # fail fast, before any process group or output exists
    dist = distributed.init_distributed()
    try:
        tokenizer = packed_tokenizer(cfg.data)
        special = special_token_ids(tokenizer, need_mask=cfg.objective == "mlm", where=cfg.data / "tokenizer")
        special.setdefault("eos", pack["eos_id"])
        model, parent_model = prepare_model(cfg, pack, tokenizer, special)
        objective = make_objective(cfg, pack, tokenizer, special)
        window = objective.window_len(cfg.seq_len)
        train_tokens = open_tokens(cfg.data / "train.bin", pack["dtype"], window)
        val_tokens = open_tokens(cfg.data / "val.bin", pack["dtype"], window)
        distributed.barrier()  # every process has read --out (a resumed run's tokenizer) before it is written
        if dist.is_main:  # only now, with the inputs checked: a bad one leaves an earlier run in --out whole
            started = begin_output(cfg.out, "pretrain")
            if redo:  # a finished run is redone from scratch: its checkpoints and logs go with it
                shutil.rmtree(cfg.out / "checkpoints")
                shutil.rmtree(cfg.out / "logs", ignore_errors=True)
            # from the start, so that --resume can check the data against it
            fit_tokenizer(tokenizer, model.config).save_pretrained(cfg.out)
        distributed.barrier()
        batches = WindowBatches(train_tokens, window, cfg.batch_size, cfg.grad_accum, cfg.seed, objective.make_batch)

        def eval_data():
            return eval_batches(val_tokens, window, cfg.seq_len, cfg.batch_size, objective.make_batch,
                                max_batches=cfg.eval_batches, seed=cfg.seed, rank=dist.rank, world=dist.world)

        result = train(model, wrap_adversarial(objective, cfg), batches, cfg, cfg.out, eval_data=eval_data,
                       dist=dist, tokens_per_byte=pack["val_tokens"] / max(1, pack["val_bytes"]))
        if not dist.is_main:
            return cfg.out
        export(cfg)
        plot_loss(cfg.out / "logs")
        params = count_params(model)
        metrics = run_metrics(result, params)
        inputs = [cfg.data / "train.bin", cfg.data / "val.bin"]
        extra = {"objective": cfg.objective,
                 "model": {"architecture": type(model).__name__, "params": params["total"],
                           "non_embedding_params": params["non_embedding"], "base_model": parent_model}}
        preview = {"stage": "pretrain", "created": now_iso(), "config": to_dict(cfg), "parent": pack, "metrics": metrics,
                   "inputs": [{"path": str(p), "sha256": sha256_file(p)} for p in inputs], **extra}
        write_model_card(cfg.out, preview)
        write_manifest(cfg.out, "pretrain", cfg, inputs=inputs, parent=pack, metrics=metrics, started=started,
                       extra=extra)
        print_summary(cfg.out, metrics)
        return cfg.out
    finally:
        distributed.close()
