"""The objectives a federation trains, built from the same pieces as centralized training.

A `Task` is what both sides of a federation need to know of one objective: the model (built the same
way, from the same seed, on the server and on every client, so only trainable tensors ever travel),
the objective the engine trains, the training units of this silo (examples, dialogues or token
windows) with their labels for skewed partitions, batches over any subset of them, the global
validation score, and the export of the final model as a normal genforge model folder. Classification
and SFT reuse `genforge.finetune.classify`/`sft` (data reading, heads, LoRA, collation, export);
pretraining reuses `genforge.train.pretrain` (packed tokens, presets, objectives).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge.errors import DataError
from genforge.finetune.batches import ShuffledBatches, in_order
from genforge.train.data import gather, mix_seed


@dataclass
class Task:
    kind: str
    cfg: Any
    model: torch.nn.Module
    objective: Any
    n: int  # training units in this process's data
    labels: list[str] | None  # one label per unit (label-skew partitions), None when unlabelled
    # (unit indices, client id) -> engine batches; the order depends on the client, see `client_seed`
    batches_for: Callable[[list[int], int], Any]
    score: Callable[[], dict[str, float]]  # global validation metrics of self.model
    export: Callable[[dict[str, Any]], dict[str, Any]]  # write the payload to cfg.out; returns final metrics
    select: str = "loss"
    label_set: list[str] | None = None  # classification: the federation's labels, in head order


def client_seed(seed: int, client: int) -> int:
    """The seed of client `client`'s data order: two silos given the same data (or the same rows) must not read
    the same batches in the same order, while each client's order stays a function of (run seed, client id), so
    a rerun or a resumed run reads what an uninterrupted one would."""
    return mix_seed(seed, "client-data", client)


def subset_batches(rows: list[int], cfg: Any, collate: Callable[[list[int]], dict], client: int
                   ) -> ShuffledBatches:
    return ShuffledBatches(len(rows), cfg.batch_size, cfg.grad_accum, client_seed(cfg.seed, client),
                           lambda picked: collate([rows[i] for i in picked]))


def trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors that travel: trainable parameters only (LoRA adapters + head, or all for full training)."""
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    unknown = set(tensors) - set(params)
    if unknown:
        raise DataError(f"the update names parameters this model lacks: {sorted(unknown)[:3]}")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value.to(params[name].dtype))


# --- classification -------------------------------------------------------------------------------

def silo_examples(cfg: Any, data: Path) -> tuple[list, list[str]]:
    """A client's own silo (it may hold only some of the labels): its training examples and its labels. All of
    it trains when the server validates on --val-data, else all but its share of the server's validation set."""
    from genforge.finetune.data import hash_split, label_set, read_labelled

    examples = read_labelled(data, cfg.text_field, cfg.label_field, cfg.multi_label, cfg.label_sep)
    train_set = examples if cfg.val_data is not None else hash_split(examples, require_both=False)[0]
    if not train_set:
        raise DataError(f"{data}: all {len(examples)} examples fall in the validation share; give more data "
                        "or --val-data")
    return train_set, label_set(examples)


def _labelled_sources(cfg: Any, data: Path | None) -> tuple[list, list, list[str]]:
    from genforge.finetune.classify import load_data
    from genforge.finetune.data import hash_split, label_set, read_labelled

    if data is not None:
        train_set, labels = silo_examples(cfg, data)
        return train_set, [], labels
    if cfg.partition != "by-file":
        return load_data(cfg)
    if cfg.val_data is not None:  # real silos: the server validates (and learns the labels) on its own data
        val_set = read_labelled(cfg.val_data, cfg.text_field, cfg.label_field, cfg.multi_label, cfg.label_sep)
        return [], val_set, label_set(val_set)
    train_set, val_set = [], []
    for path in cfg.client_data:  # without --val-data: each silo's hash split, where visible (simulation)
        examples = read_labelled(path, cfg.text_field, cfg.label_field, cfg.multi_label, cfg.label_sep)
        tr, va = hash_split(examples, require_both=False)
        train_set, val_set = train_set + tr, val_set + va
    if not val_set:
        raise DataError("no silo has an example in the validation share (hash bucket 8): give --val-data")
    return train_set, val_set, label_set(train_set + val_set)


def classify_task(cfg: Any, data: Path | None = None, labels: list[str] | None = None) -> Task:
    from genforge.finetune.classifier import build_classifier
    from genforge.finetune.classify import ClassifyObjective, encode_targets, make_collate, make_scorer
    from genforge.finetune.lora import apply_lora
    from genforge.finetune.model import freeze, load_tokenizer

    train_set, val_set, found = _labelled_sources(cfg, data)
    labels = labels or found
    unknown = {lab for _, labs in train_set + val_set for lab in labs} - set(labels)
    if unknown:
        raise DataError(f"{data or cfg.data}: labels outside the federation's label set: {sorted(unknown)[:5]}")
    tokenizer = load_tokenizer(cfg.model)
    torch.manual_seed(cfg.seed)
    model, new_modules = build_classifier(cfg.model, head=cfg.head, labels=labels, multi_label=cfg.multi_label,
                                          pad_id=tokenizer.pad_token_id, dropout=cfg.dropout)
    freeze(model.body, layers=cfg.freeze_layers, embeddings=cfg.freeze_embeddings)
    if cfg.lora_r:
        model.body = apply_lora(model.body, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                                targets=cfg.lora_targets, task_type="SEQ_CLS" if cfg.head == "linear" else None,
                                new_modules=new_modules)

    def tokenize(examples: list) -> list[list[int]]:
        if not examples:  # the server of real silos holds no training data
            return []
        ids = tokenizer([t for t, _ in examples], truncation=True, max_length=cfg.seq_len)["input_ids"]
        return [row or [tokenizer.pad_token_id] for row in ids]

    train_collate = make_collate(tokenize(train_set), encode_targets(train_set, labels, cfg.multi_label),
                                 tokenizer.pad_token_id)
    val_collate = make_collate(tokenize(val_set), encode_targets(val_set, labels, cfg.multi_label),
                               tokenizer.pad_token_id)
    objective = ClassifyObjective(cfg.multi_label, cfg.label_smoothing)
    val_batches = functools.partial(in_order, len(val_set), cfg.batch_size, val_collate, cfg.eval_batches)

    def export(metrics: dict[str, Any]) -> dict[str, Any]:
        from genforge.finetune.classifier import predict_probs
        from genforge.finetune.classify import export as save
        from genforge.finetune.metrics import plot_confusion, report
        from genforge.finetune.model import is_decoder
        from genforge.models.load import read_model_config

        probs = predict_probs(model, tokenizer, [t for t, _ in val_set], seq_len=cfg.seq_len,
                              multi_label=cfg.multi_label, batch_size=cfg.batch_size)
        y_true = encode_targets(val_set, labels, cfg.multi_label).numpy().astype(int)
        y_pred = (probs > 0.5).astype(int) if cfg.multi_label else probs.argmax(1)
        val = report(y_true, y_pred, labels, cfg.multi_label)
        plot_confusion(y_true, y_pred, labels, cfg.multi_label, cfg.out / "logs" / "confusion.png")
        save(cfg, model, tokenizer, labels, is_decoder(read_model_config(cfg.model)))
        return {"val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"], "labels": labels,
                "val_examples": len(val_set)}

    return Task("classify", cfg, model, objective, len(train_set),
                [labs[0] for _, labs in train_set] if not cfg.multi_label else None,
                lambda rows, client: subset_batches(rows, cfg, train_collate, client),
                make_scorer(model, objective, val_batches, labels), export, select=cfg.select, label_set=labels)


# --- SFT ------------------------------------------------------------------------------------------

def sft_examples(cfg: Any, data: Path | None) -> tuple[Any, list, list]:
    """(tokenizer, encoded training dialogues, encoded validation dialogues) of a client's silo `data`, or of the
    configured data (the server's view: with real silos it holds only the validation set)."""
    from genforge.finetune.data import hash_split
    from genforge.finetune.model import load_tokenizer
    from genforge.finetune.sft import dialogue_text, encode_all, ensure_chat_template, read_dialogues

    tokenizer = load_tokenizer(cfg.model)
    ensure_chat_template(tokenizer, cfg.model)
    sources = [data] if data is not None else ([cfg.data] if cfg.partition != "by-file" else cfg.client_data)
    train_d, val_d = [], []
    for path in sources:  # with --val-data every dialogue trains; else each source's hash share validates
        dialogues = read_dialogues(path, cfg.system)
        tr, va = (dialogues, []) if cfg.val_data is not None else \
            hash_split(dialogues, text_of=dialogue_text, require_both=False)
        train_d, val_d = train_d + tr, val_d + va
    if cfg.val_data is not None:
        val_d = read_dialogues(cfg.val_data, cfg.system)
    if not train_d and (data is not None or cfg.partition != "by-file"):  # a client, or the data to split
        raise DataError(f"{data or cfg.data}: no training dialogues after the hash split: give more data")
    if not val_d and data is None:  # the server validates
        raise DataError("no dialogue falls in the validation share (hash bucket 8): give --val-data")
    return tokenizer, encode_all(tokenizer, train_d, cfg), encode_all(tokenizer, val_d, cfg)


def sft_task(cfg: Any, data: Path | None = None) -> Task:
    from genforge.errors import ConfigError
    from genforge.finetune.lora import apply_lora
    from genforge.finetune.model import Wrapped, freeze, is_decoder
    from genforge.finetune.sft import load_causal_lm, make_collate, takes_position_ids
    from genforge.models.load import read_model_config
    from genforge.train.evaluate import evaluate_loss
    from genforge.train.objectives import ClmObjective

    if not is_decoder(read_model_config(cfg.model)):
        raise ConfigError(f"model {cfg.model} is an encoder; SFT needs a causal LM (decoder)")
    tokenizer, train_ex, val_ex = sft_examples(cfg, data)
    torch.manual_seed(cfg.seed)
    lm = load_causal_lm(cfg.model, cfg.dropout)
    positions = takes_position_ids(lm)
    freeze(lm, layers=cfg.freeze_layers, embeddings=cfg.freeze_embeddings)
    if cfg.lora_r:
        lm = apply_lora(lm, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, targets=cfg.lora_targets,
                        task_type="CAUSAL_LM")
    model = Wrapped(lm)
    objective = ClmObjective()
    train_collate = make_collate(train_ex, tokenizer.pad_token_id, positions)
    val_collate = make_collate(val_ex, tokenizer.pad_token_id, positions)

    def score() -> dict[str, float]:
        device = next(model.parameters()).device
        result = evaluate_loss(model, objective, in_order(len(val_ex), cfg.batch_size, val_collate, cfg.eval_batches),
                               device=device)
        return {"loss": result["loss"], "perplexity": result["perplexity"]}

    def export(metrics: dict[str, Any]) -> dict[str, Any]:
        from genforge.finetune.sft import export as save

        save(cfg, model.model, tokenizer)
        return {"val_sequences": len(val_ex)}

    return Task("sft", cfg, model, objective, len(train_ex), None,
                lambda rows, client: subset_batches(rows, cfg, train_collate, client), score, export)


# --- pretraining ----------------------------------------------------------------------------------

@dataclass
class WindowSubset:
    """Random windows among a silo's non-overlapping windows `rows` of a token file; pure in the step.

    `seed` is the client's (`client_seed`), so silos on the same token folder draw different windows."""

    tokens: np.ndarray
    rows: list[int]
    window: int
    batch_size: int
    micro_batches: int
    seed: int
    make_batch: Callable

    def batch(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, "fed-windows", step, micro))
        picked = torch.randint(0, len(self.rows), (self.batch_size,), generator=g)
        starts = torch.tensor([self.rows[i] * self.window for i in picked.tolist()])
        return self.make_batch(gather(self.tokens, starts, self.window),
                               torch.Generator().manual_seed(mix_seed(self.seed, "batch", step, micro)))

    def state_dict(self, step: int) -> dict[str, Any]:
        return {"next_step": step, "seed": self.seed, "windows": len(self.rows)}


@dataclass
class PackedSilo:
    """A packed data folder as pretraining reads it: its token windows (`len(tokens) // window` train)."""

    folder: Path
    pack: dict[str, Any]
    tokenizer: Any
    special: dict[str, int]
    objective: Any
    window: int
    tokens: np.ndarray


def packed_silo(cfg: Any, data: Path | None) -> PackedSilo:
    from genforge.data.pack import packed_tokenizer
    from genforge.train.data import open_tokens, read_pack
    from genforge.train.pretrain import make_objective, special_token_ids

    folder = data or (cfg.data if cfg.partition != "by-file" else cfg.client_data[0])
    pack = read_pack(folder)
    tokenizer = packed_tokenizer(folder)
    special = special_token_ids(tokenizer, need_mask=cfg.objective == "mlm", where=folder / "tokenizer")
    special.setdefault("eos", pack["eos_id"])
    objective = make_objective(cfg, pack, tokenizer, special)
    window = objective.window_len(cfg.seq_len)
    return PackedSilo(folder, pack, tokenizer, special, objective, window,
                      open_tokens(folder / "train.bin", pack["dtype"], window))


def pretrain_task(cfg: Any, data: Path | None = None) -> Task:
    from genforge.train.data import eval_batches, open_tokens
    from genforge.train.evaluate import evaluate_loss
    from genforge.train.pretrain import prepare_model

    silo = packed_silo(cfg, data)
    folder, pack, tokenizer, objective, window, tokens = (silo.folder, silo.pack, silo.tokenizer, silo.objective,
                                                          silo.window, silo.tokens)
    model, _ = prepare_model(dataclasses.replace(cfg, resume=False), pack, tokenizer, silo.special)
    val_folder = cfg.data if cfg.partition != "by-file" else folder
    val_tokens = open_tokens(val_folder / "val.bin", pack["dtype"], window)

    def score() -> dict[str, float]:
        device = next(model.parameters()).device
        batches = eval_batches(val_tokens, window, cfg.seq_len, cfg.batch_size, objective.make_batch,
                               max_batches=cfg.eval_batches, seed=cfg.seed)
        result = evaluate_loss(model, objective, batches, device=device)
        return {"loss": result["loss"], "perplexity": result["perplexity"]}

    def export(metrics: dict[str, Any]) -> dict[str, Any]:
        from genforge.models.load import fit_tokenizer
        from genforge.train.checkpoint import save_weights

        save_weights(model, cfg.out)
        fit_tokenizer(tokenizer, model.config).save_pretrained(cfg.out)
        return {"objective": cfg.objective}

    return Task("pretrain", cfg, model, objective, len(tokens) // window, None,
                lambda rows, client: WindowSubset(tokens, rows, window, cfg.batch_size, cfg.grad_accum,
                                                    client_seed(cfg.seed, client), objective.make_batch),
                score, export)


def build_task(kind: str, cfg: Any, data: Path | None = None, labels: list[str] | None = None) -> Task:
    """The task of `kind` on `data` (a client's own silo) or, by default, on the configured data.

    `labels` (classification) is the federation's label set, fixed by the server, so a silo that
    holds only some labels still builds the same head as everyone else.
    """
    if kind == "classify":
        return classify_task(cfg, data, labels)
    if kind == "sft":
        return sft_task(cfg, data)
    return pretrain_task(cfg, data)
