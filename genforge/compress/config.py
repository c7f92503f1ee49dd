"""Config of `genforge compress`: one command, seven methods, a before/after report.

Light on purpose (no torch import): the CLI builds its flags from this dataclass. It extends the
engine's `TrainConfig` because two methods train: distillation, and the optional recovery
fine-tuning after pruning both run the one training loop, so `--lr`, `--max-steps`, `--max-minutes`,
`--batch-size`, `--resume` ... mean what they mean in `pretrain` and `finetune`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genforge.config import check_threads, field
from genforge.errors import ConfigError
from genforge.train.config import TrainConfig

METHODS = ("int8", "int4", "onnx-int8", "bf16", "prune", "prune-structured", "distill")
INT8_SCHEMES = ("dynamic", "weight-only")
IMPORTANCE = ("magnitude", "wanda")
STUDENT_PRESETS = ("tiny", "small", "base", "custom")
GROUP_SIZES = (32, 64, 128, 256)
STUDENT_SIZES = ("hidden_size", "num_layers", "num_heads", "intermediate_size")


@dataclass(kw_only=True)
class CompressConfig(TrainConfig):
    """Make a model smaller and faster, and measure what it cost (report.json, table, chart)."""

    model: Path = field(None, help="model to compress: a causal LM, a masked LM or a classifier run folder")
    method: str = field(None, help="int8 / int4 = quantised linear layers; onnx-int8 = ONNX Runtime int8; "
                                   "bf16 = bfloat16 weights and compute (fast where the CPU has AMX); "
                                   "prune = unstructured sparsity; prune-structured = remove FFN neurons "
                                   "and attention heads; distill = train a smaller student", choices=METHODS)
    eval_data: Path | None = field(None, help="quality data for the report: a packed data folder (LMs: "
                                              "perplexity, bits per byte) or a labelled file (classifiers: "
                                              "accuracy, macro-F1)")
    data: Path | None = field(None, help="training data of distill and of recovery after pruning, and the "
                                         "calibration data of --importance wanda: a packed data folder (LMs) "
                                         "or a labelled file (classifiers)")
    text_field: str = field("text", help="classifier data: column/key holding the text")
    label_field: str = field("label", help="classifier data: column/key holding the label")
    # quantisation
    int8_scheme: str = field("dynamic", help="int8: dynamic = int8 weights and per-call int8 activations "
                                             "(fastest here); weight-only = int8 weights, float activations",
                             choices=INT8_SCHEMES)
    group_size: int = field(64, help="int4: weights sharing one scale and zero point along the input "
                                     "dimension", choices=GROUP_SIZES)
    # pruning
    sparsity: float = field(0.5, help="prune: fraction of the transformer blocks' linear weights set to zero")
    ffn_fraction: float = field(0.3, help="prune-structured: fraction of FFN neurons removed from every layer")
    heads_fraction: float = field(0.0, help="prune-structured: fraction of attention heads removed from "
                                            "every layer")
    importance: str = field("magnitude", help="pruning score: |W|, or Wanda's |W| x ||x|| with input norms "
                                              "from --data", choices=IMPORTANCE)
    calibration_batches: int = field(8, help="wanda: batches of --data whose activations are measured")
    recover: bool = field(True, help="prune methods: fine-tune the pruned model on --data afterwards "
                                     "(when --data is given)")
    recover_distill: bool = field(True, help="prune methods: recover by distillation from the unpruned model "
                                             "(Minitron): --alpha x KL x T^2 (--temperature) + (1 - alpha) x the "
                                             "task loss; --no-recover-distill fine-tunes on the task loss alone")
    # distillation
    student_layers: int = field(0, help="distill: the student is a copy of the teacher with this many of "
                                        "its layers, evenly spaced (0 = half)")
    student_preset: str | None = field(None, help="distill: a fresh student of this size instead (same "
                                                  "tokenizer)", choices=STUDENT_PRESETS)
    hidden_size: int = field(0, help="distill, custom student: hidden size")
    num_layers: int = field(0, help="distill, custom student: transformer layers")
    num_heads: int = field(0, help="distill, custom student: attention heads")
    intermediate_size: int = field(0, help="distill, custom student: MLP width")
    temperature: float = field(2.0, help="distill, prune recovery: softmax temperature of the teacher and student logits")
    alpha: float = field(0.5, help="distill, prune recovery: weight of the KL loss (x T^2); 1 - alpha weighs the task loss")
    hidden_weight: float = field(0.0, help="distill: weight of hidden-state matching (cosine) loss; 0 = off")
    trim_vocab: bool = field(False, help="distill a WordPiece classifier: keep only the vocabulary the "
                                         "training texts use (smaller embeddings)")
    epochs: float = field(0.0, help="classifier training: passes over --data (overrides --max-steps)")
    # measurement
    measure_steps: int = field(48, help="timed decode steps (LMs) or forward passes (classifiers) per model")
    threads: int = field(0, help="torch CPU threads for compression and measurement; 0 = torch's default")
    # training defaults for distillation / recovery (TrainConfig's are pretraining's)
    max_steps: int = field(300, help="distill / recovery: optimizer steps (unless --epochs is given)")
    lr: float = field(2e-4, help="distill / recovery: peak learning rate")
    min_lr: float = field(2e-5, help="learning rate at the end of the cosine decay")
    warmup_steps: int = field(20, help="linear warm-up steps")
    weight_decay: float = field(0.01, help="decoupled weight decay of AdamW (matrices only)")
    eval_every: int = field(100, help="evaluate every N steps (0 = only at the end)")
    save_every: int = field(0, help="write checkpoints/latest every N steps (0 = only at the end)")

    def check(self) -> None:
        super().check()
        if self.model is None:
            raise ConfigError("give the model to compress: --model DIR")
        if self.method is None:
            raise ConfigError(f"give the method: --method {{{','.join(METHODS)}}}")
        if self.adversarial != "none":
            raise ConfigError("--adversarial does not apply to compress: train the model adversarially first "
                              "(pretrain, finetune classify or sft), then compress it")
        if not 0 < self.sparsity < 1:
            raise ConfigError(f"--sparsity must be in (0, 1), got {self.sparsity}")
        for name in ("ffn_fraction", "heads_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")
        if self.method == "prune-structured" and not (self.ffn_fraction or self.heads_fraction):
            raise ConfigError("prune-structured needs --ffn-fraction or --heads-fraction above 0")
        if self.method == "distill" and self.data is None:
            raise ConfigError("distill trains the student on --data: give a packed data folder (LMs) "
                              "or a labelled file (classifiers)")
        if self.method in ("prune", "prune-structured") and self.importance == "wanda" and self.data is None:
            raise ConfigError("--importance wanda measures activations on --data: give it, or use magnitude")
        for name in ("calibration_batches", "measure_steps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("student_layers", "hidden_size", "num_layers", "num_heads", "intermediate_size", "threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        check_threads("--threads", self.threads)
        if self.temperature <= 0:
            raise ConfigError(f"--temperature must be positive, got {self.temperature}")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"--alpha must be in [0, 1], got {self.alpha}")
        if self.hidden_weight < 0:
            raise ConfigError(f"--hidden-weight must be >= 0, got {self.hidden_weight}")
        if self.epochs < 0:
            raise ConfigError(f"--epochs must be >= 0, got {self.epochs}")
        if self.hidden_weight and self.method != "distill":
            raise ConfigError("--hidden-weight applies to --method distill (prune recovery matches logits)")
        if self.trim_vocab and self.method != "distill":
            raise ConfigError("--trim-vocab applies to --method distill")
        self.check_student()

    def check_student(self) -> None:
        """The student flags must say one student: unused ones were silently ignored (a `--hidden-size 64`
        without `--student-preset custom` distilled the default half-depth copy), and `presets` names its own
        `--preset` flag, not this command's `--student-preset`."""
        flags = {name: "--" + name.replace("_", "-") for name in STUDENT_SIZES}
        sizes = [flag for name, flag in flags.items() if getattr(self, name)]
        chosen = [flag for flag, on in (("--student-layers", self.student_layers),
                                        ("--student-preset", self.student_preset)) if on]
        if chosen and self.method != "distill":
            raise ConfigError(f"{chosen[0]} applies to --method distill")
        if len(chosen) == 2:
            raise ConfigError("--student-layers (a copy of the teacher with fewer layers) and --student-preset "
                              "(a fresh model) are two students: give one")
        if self.student_preset == "custom" and not sizes:
            raise ConfigError(f"--student-preset custom needs at least one of {', '.join(flags.values())}")
        if sizes and self.student_preset != "custom":
            fixed = f"; '{self.student_preset}' has a fixed size" if self.student_preset else ""
            raise ConfigError(f"{sizes[0]} sizes a custom student (--method distill --student-preset custom){fixed}")
