"""`genforge compress`: a model folder in, a smaller model folder + before/after report out.

`compress(cfg)` loads the model through the normal paths, applies one method, saves the result in
the layout the other stages read (so `generate`, `chat`, `predict`, `eval` take it unchanged),
reloads it from disk the same way, and measures the original and the reloaded model in the same run
on the same data: report.json, report.png, a printed table, the model card and the manifest.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from genforge.artifacts import MANIFEST, read_manifest, write_manifest
from genforge.compress.config import CompressConfig
from genforge.compress.subject import Subject, kind_of, load_subject, save_subject
from genforge.errors import ConfigError, DataError
from genforge.models.load import check_finished_run

# Files a previous run may have left in --out that would change how the new folder loads or what it does, and that
# this run writes only for some models (a classifier's files under an LM, a decoder's stop ids under a classifier).
PAYLOAD = ("model.safetensors", "quantized.safetensors", "compression.json", "head.safetensors", "model.onnx",
           "model.onnx.data", "classifier.json", "typo_vocabulary.txt", "generation_config.json",
           "chat_template.jinja", "report.json", "report.png")
Result = tuple[Subject, dict[str, Any] | None, dict[str, Any]]  # model, compression.json, details
TRAINS = ("prune", "prune-structured", "distill")  # the methods that read --data (the others only check it)


def read_files(cfg: CompressConfig, kind: str) -> list[Path]:
    """The files this run reads, for the manifest's `inputs`. The data: a classifier's labelled files, or the
    token files of a packed folder that training or calibration (train.bin, val.bin) and the report (val.bin)
    read; then the model's weights, since the parent manifest says how the model was made, not which bytes
    were compressed, and a model from outside genforge has none. Data first: the card lists the first six, and
    a sharded model has many weight files."""
    files = []
    data = [(cfg.data, ("train", "val"))] if cfg.method in TRAINS else []
    for path, splits in [*data, (cfg.eval_data, ("val",))]:
        if path is not None:
            files += [Path(path)] if kind == "classifier" else [Path(path) / f"{s}.bin" for s in splits]
    files += sorted(p for p in Path(cfg.model).iterdir() if p.is_file() and (
        p.suffix == ".safetensors" or (p.name.startswith("pytorch_model") and p.suffix == ".bin")))
    return list(dict.fromkeys(files))  # --data and --eval-data may be the same folder


def check_inputs(cfg: CompressConfig, kind: str) -> None:
    """Refuse missing data, data of the wrong kind for the model, and a classifier's labelled file that does not
    read or has labels the classifier lacks, before any work (one line, naming the flag or file).

    A language model's packed data must come from its own tokenizer (as for `pretrain --model`): with
    another one of the same size, training would teach the wrong ids and the report would score nonsense.
    Checked here, not where the data are read, so that it fails before an earlier run in --out is unmade.
    """
    from genforge.compress.task import read_examples
    from genforge.data.pack import packed_tokenizer
    from genforge.finetune.classifier import read_info
    from genforge.train.data import read_pack
    from genforge.train.pretrain import check_same_tokenizer

    for flag, path in (("--eval-data", cfg.eval_data), ("--data", cfg.data)):
        if path is None:
            continue
        if not Path(path).exists():
            raise DataError(f"{flag} {path} does not exist")
        if kind == "classifier":
            if not Path(path).is_file():
                raise DataError(f"{flag} {path}: a classifier needs a labelled file (CSV, TSV, JSONL, JSON)")
            read_examples(cfg, read_info(cfg.model), path)  # its labels and fields, before minutes of training
        else:
            if not Path(path).is_dir():
                raise DataError(f"{flag} {path}: a language model needs a packed data folder (`genforge data pack`)")
            read_pack(Path(path))
            check_same_tokenizer(Path(cfg.model), packed_tokenizer(Path(path)))
    from genforge.compress.load import read_compression

    done = (read_compression(cfg.model) or {}).get("loader")
    if done in ("quantized", "onnx", "bfloat16"):
        raise ConfigError(f"model {cfg.model} is already compressed ({done}): compress the float32 model it came "
                          "from")
    if cfg.method == "distill" and cfg.trim_vocab and kind != "classifier":
        raise ConfigError("--trim-vocab is for classifiers (a language model predicts every vocabulary token)")


def quantize(cfg: CompressConfig, subject: Subject) -> Result:
    from genforge.compress.quantize import quantize_model

    scheme = "int4" if cfg.method == "int4" else ("int8-dynamic" if cfg.int8_scheme == "dynamic" else "int8")
    model = subject.copy()
    layout = quantize_model(model.transformer, scheme, cfg.group_size)
    details = {"scheme": scheme, "group_size": cfg.group_size if scheme == "int4" else None,
               "layers": layer_schemes(layout["linears"])}
    return model, {"loader": "quantized", "method": cfg.method, **details, **layout}, details


def layer_schemes(linears: dict[str, dict[str, Any]]) -> dict[str, int]:
    """How many linear layers got each scheme ("int4 g32", "int8", ...): with int4 a layer whose inputs the asked
    --group-size does not divide takes a smaller group, and the head stays int8, so the asked size alone misleads."""
    counts = Counter(f"int4 g{spec['group_size']}" if spec["scheme"] == "int4" else spec["scheme"]
                     for spec in linears.values())
    return dict(sorted(counts.items()))


def _norms(cfg: CompressConfig, subject: Subject, task: Any) -> dict[str, torch.Tensor] | None:
    from genforge.compress.prune import block_linears, input_norms

    if cfg.importance != "wanda":
        return None
    return input_norms(subject.model, block_linears(subject.model), task.calibration(cfg.calibration_batches),
                       subject.kind)


def prune(cfg: CompressConfig, subject: Subject) -> Result:
    from genforge.compress.prune import keep_masks, prune_structured, prune_unstructured
    from genforge.compress.task import task_for

    model = subject.copy()
    task = task_for(cfg, model, cfg.data) if cfg.data is not None else None
    norms = _norms(cfg, model, task)
    compression = None
    if cfg.method == "prune":
        details: dict[str, Any] = prune_unstructured(model.model, cfg.sparsity, norms)
    else:
        details = prune_structured(model.model, cfg.ffn_fraction, cfg.heads_fraction, norms)
        loader = details.pop("loader")
        compression = {"loader": "resized", "method": cfg.method, **loader} if loader else None
    details["importance"] = cfg.importance
    recovers = task is not None and cfg.recover
    distils = recovers and cfg.recover_distill
    details["recover_distill"] = {"alpha": cfg.alpha, "temperature": cfg.temperature} if distils else None
    if recovers:
        handles = keep_masks(model.model) if cfg.method == "prune" else []
        try:
            details["recovery"] = recover(cfg, subject, model, task)
        finally:
            for h in handles:
                h.remove()
    return model, compression, details


def recover(cfg: CompressConfig, original: Subject, pruned: Subject, task: Any) -> dict[str, Any]:
    """Fine-tune the pruned model on --data as a student of the unpruned original (Minitron, Sreenivas et al.
    2024: distillation recovers far more than fine-tuning), or with `--no-recover-distill` on the task's own loss.

    The original is the teacher as loaded (eval mode, frozen; compress measures it afterwards, unchanged by this).
    Checkpoints are still selected by the task's validation loss or macro-F1 (`run_training` scores the student
    alone when the objective is not the task's), so they compare with those of plain recovery.
    """
    if not cfg.recover_distill:
        return train_model(cfg, pruned, task.objective, task)
    from genforge.compress.distill import DistillObjective, DistillStudent

    original.model.requires_grad_(False)
    objective = DistillObjective(original.model, original.kind, cfg.temperature, cfg.alpha,
                                 multi_label=bool((original.info or {}).get("multi_label")))
    return train_with_teacher(cfg, pruned, objective, task, DistillStudent(pruned.model), original.model)


def train_with_teacher(cfg: CompressConfig, student: Subject, objective: Any, task: Any, trained: torch.nn.Module,
                       teacher: torch.nn.Module) -> dict[str, Any]:
    """`train_model` with a teacher in the objective. The engine moves only the module it trains (the student) to
    its device; the teacher's forward takes the same batches, so it goes there too, and back to the CPU, where
    both models are saved and measured."""
    from genforge.finetune.run import device

    teacher.to(device())
    try:
        return train_model(cfg, student, objective, task, trained)
    finally:
        teacher.to("cpu")


def train_model(cfg: CompressConfig, subject: Subject, objective: Any, task: Any,
                trained: torch.nn.Module | None = None) -> dict[str, Any]:
    """Run the engine on `trained` (default: the subject's model; an HF LM goes through `Wrapped` so its
    checkpoints hold the whole state) and load the best checkpoint back."""
    from genforge.compress.task import run_training
    from genforge.finetune.model import Wrapped

    if trained is None:
        trained = subject.model if subject.kind == "classifier" else Wrapped(subject.model)
    return run_training(trained, objective, task, cfg, cfg.out, score_model=subject.model)


def distill(cfg: CompressConfig, teacher: Subject) -> Result:
    from genforge.compress.distill import DistillObjective, DistillStudent, make_student
    from genforge.compress.task import read_examples, task_for

    teacher.model.requires_grad_(False)
    student, layer_map = make_student(cfg, teacher)
    table = None
    if cfg.trim_vocab:
        from genforge.compress.vocab import trim_vocab

        texts = [t for t, _ in read_examples(cfg, teacher.info, cfg.data)]
        student, table = trim_vocab(student, texts)
    task = task_for(cfg, student, cfg.data)
    projections = None
    t_width, s_width = teacher.transformer.config.hidden_size, student.transformer.config.hidden_size
    if cfg.hidden_weight and t_width != s_width:
        projections = torch.nn.ModuleList(torch.nn.Linear(s_width, t_width, bias=False) for _ in layer_map)
    objective = DistillObjective(teacher.model, teacher.kind, cfg.temperature, cfg.alpha, cfg.hidden_weight,
                                 layer_map, bool((teacher.info or {}).get("multi_label")), table)
    details = {"student_layers": student.transformer.config.num_hidden_layers, "layer_map": layer_map,
               "student_preset": cfg.student_preset, "vocab_size": student.transformer.config.vocab_size}
    details["training"] = train_with_teacher(cfg, student, objective, task, DistillStudent(student.model, projections),
                                             teacher.model)
    return student, None, details


def onnx_int8(cfg: CompressConfig, subject: Subject) -> Result:
    from genforge.compress.onnx import export_int8

    compression = export_int8(subject, cfg.out)
    return subject, {"method": cfg.method, **compression}, {"format": "onnx", "quantization": "dynamic int8"}


def bf16(cfg: CompressConfig, subject: Subject) -> Result:
    """All weights in bfloat16, computing in it too: half the bytes, and on a CPU with AMX (Intel Sapphire Rapids
    and later) bfloat16 matrix tiles. A standard HF folder; its compression.json tells genforge's loaders to keep
    bfloat16 instead of loading float32 as they do for training."""
    model = subject.copy()
    model.model.to(torch.bfloat16)
    return model, {"loader": "bfloat16", "method": cfg.method}, {"dtype": "bfloat16"}


METHODS = {"int8": quantize, "int4": quantize, "prune": prune, "prune-structured": prune, "distill": distill,
           "onnx-int8": onnx_int8, "bf16": bf16}


def measure(cfg: CompressConfig, original: Subject, compressed: Subject) -> tuple[dict, dict]:
    """The same measurements of both models (see measure.py); quality only with --eval-data."""
    from genforge.compress import measure as m
    from genforge.compress.task import read_examples

    examples = None
    results = []
    if original.kind == "classifier" and cfg.eval_data is not None:
        examples = read_examples(cfg, original.info, cfg.eval_data)
    texts = [t for t, _ in examples] if examples else None
    for subject, folder in ((original, cfg.model), (compressed, cfg.out)):
        subject.model.eval()  # both as served: a method must not leave the original's dropout on
        values: dict[str, Any] = {**m.parameters(subject.model), "size_bytes": m.size_on_disk(folder)}
        if cfg.eval_data is not None:
            if subject.kind == "classifier":
                values.update(m.classifier_quality(subject, examples, "original" if subject is original else "compressed"))
            else:
                values.update(m.lm_quality(subject, cfg.eval_data, seq_len=cfg.seq_len, batch_size=cfg.batch_size,
                                           batches=cfg.eval_batches, seed=cfg.seed))
        results.append(values)
    timings = m.speed([original, compressed], m.speed_inputs(original, texts, cfg.eval_data, cfg.seed),
                      cfg.measure_steps)
    for values, timing in zip(results, timings, strict=True):
        values.update(timing)
    return results[0], results[1]


def compress(cfg: CompressConfig) -> Path:
    """Compress `cfg.model` with `cfg.method` into `cfg.out`; return the folder."""
    from genforge.compress.card import write_card
    from genforge.compress.report import build_report, print_report, write_report
    from genforge.finetune.run import prepare_output

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    check_finished_run(cfg.model)
    kind = kind_of(cfg.model)
    check_inputs(cfg, kind)
    if Path(cfg.out).resolve() == Path(cfg.model).resolve():
        raise ConfigError("--out must not be the --model folder: the original is measured against the result")
    started = prepare_output(cfg, stage="compress")
    for name in PAYLOAD:
        with contextlib.suppress(FileNotFoundError):
            (cfg.out / name).unlink()
    original = load_subject(cfg.model)
    compressed, compression, details = METHODS[cfg.method](cfg, original)
    save_subject(compressed, cfg.out, compression)
    reloaded = load_subject(cfg.out)  # what users will get: measured as loaded from disk
    before, after = measure(cfg, original, reloaded)
    report = build_report(cfg.method, {"kind": kind, **details}, before, after)
    write_report(cfg.out, report)
    parent = read_manifest(cfg.model) if (Path(cfg.model) / MANIFEST).is_file() else None
    metrics = {k: v for k, v in after.items() if isinstance(v, int | float)}
    metrics.update({f"change_{k}": v for k, v in report["change"].items()})
    extra = {"method": cfg.method, "objective": kind if kind != "classifier" else None, "task": kind,
             "model": {"architecture": type(reloaded.transformer).__name__, "params": after["params"],
                       "base_model": str(Path(cfg.model).resolve())}}
    inputs = read_files(cfg, kind)
    write_card(cfg.out, cfg, report, parent, inputs)
    write_manifest(cfg.out, "compress", cfg, inputs=inputs, parent=parent, metrics=metrics, started=started,
                   extra=extra)
    print_report(report, f"compress --method {cfg.method} -> {cfg.out}")
    return cfg.out

