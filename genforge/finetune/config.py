"""Configs of the fine-tuning commands: classify, sft, average, predict, chat, tune.

Light on purpose (no torch import): the CLI builds its flags from these dataclasses. Both training
commands extend the engine's `TrainConfig` (so `--lr`, `--max-steps`, `--patience`, `--weight-decay`
mean what they mean in `pretrain`) with fine-tuning defaults (small LR, frequent evaluation) and the
adaptation knobs they share: LoRA, freezing, dropout override.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genforge.adversarial.config import ATTACKS
from genforge.config import Config, check_text, field
from genforge.errors import ConfigError
from genforge.generate.config import check_sampling
from genforge.train.config import TrainConfig

HEADS = ("linear", "lstm", "transformer", "mean")
MAX_COPIES = 20  # attacked copies per training text and recipe: more only multiplies the training time


@dataclass(kw_only=True)
class FinetuneConfig(TrainConfig):
    """What every fine-tuning run shares: a base model, data, LoRA and regularisation."""

    model: Path = field(None, help="base model: a local Hugging Face folder (genforge run or any checkpoint)")
    data: Path = field(None, help="training data file (CSV, TSV, JSONL or JSON)")
    val_data: Path | None = field(None, help="validation file; default: hash bucket 8 of 10 of --data "
                                             "(sha256 of the text, as in shared/data/README.md)")
    epochs: float = field(0.0, help="train this many passes over the data (overrides --max-steps; 0 = use --max-steps)")
    lr: float = field(5e-5, help="peak learning rate (LoRA usually wants ~10x more than full fine-tuning)")
    min_lr: float = field(0.0, help="learning rate at the end of the cosine decay")
    warmup_steps: int = field(20, help="linear warm-up steps")
    weight_decay: float = field(0.01, help="decoupled weight decay of AdamW (matrices only)")
    max_steps: int = field(300, help="stop after this many optimizer steps (unless --epochs is given)")
    eval_every: int = field(50, help="evaluate on the validation set every N steps (0 = only at the end)")
    eval_batches: int = field(0, help="validation batches per evaluation (0 = the whole validation set)")
    save_every: int = field(0, help="write checkpoints/latest every N steps (0 = only at the end)")
    dropout: float = field(-1.0, help="override every dropout probability of the model (-1 = keep the model's)")
    label_smoothing: float = field(0.0, help="label smoothing of the cross-entropy (0 = off)")
    freeze_layers: int = field(0, help="freeze the first N transformer layers")
    freeze_embeddings: bool = field(False, help="freeze the token/position embeddings")
    lora_r: int = field(0, help="LoRA rank (0 = full fine-tuning)")
    lora_alpha: float = field(16.0, help="LoRA scaling alpha (the update is scaled by alpha / r)",
                              needs=("lora_r",))
    lora_dropout: float = field(0.05, help="dropout on the LoRA branch", needs=("lora_r",))
    lora_targets: list[str] = field(default_factory=list, help="module names to adapt (repeatable, e.g. "
                                                               "q_proj); default: every linear layer",
                                     needs=("lora_r",))
    merge: bool = field(False, help="LoRA: save the merged full model instead of the adapter")

    def check(self) -> None:
        super().check()
        if self.model is None:
            raise ConfigError("give the base model folder: --model DIR")
        if self.data is None:
            raise ConfigError("give the training data: --data FILE")
        if self.epochs < 0:
            raise ConfigError(f"--epochs must be >= 0, got {self.epochs}")
        if not (self.dropout == -1 or 0 <= self.dropout < 1):
            raise ConfigError(f"--dropout must be in [0, 1) or -1 (keep), got {self.dropout}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.freeze_layers < 0:
            raise ConfigError(f"--freeze-layers must be >= 0, got {self.freeze_layers}")
        if self.lora_r < 0:
            raise ConfigError(f"--lora-r must be >= 0, got {self.lora_r}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if not 0 < self.lora_alpha < float("inf"):
            raise ConfigError(f"--lora-alpha must be a finite number > 0 (the update is scaled by alpha / r), "
                              f"got {self.lora_alpha}")
        if self.merge and not self.lora_r:
            raise ConfigError("--merge only applies to LoRA runs: add --lora-r N or drop --merge")
        if self.lora_r and self.freeze_layers:
            raise ConfigError("--freeze-layers is for full fine-tuning; LoRA already freezes the base model")


@dataclass(kw_only=True)
class ClassifyConfig(FinetuneConfig):
    """Text classification (single- or multi-label) with a task head on an encoder or a decoder."""

    text_field: str = field("text", help="column/key holding the text")
    label_field: str = field("label", help="column/key holding the label(s)")
    multi_label: bool = field(False, help="several labels per text (a list, or a string cut at --label-sep)")
    label_sep: str = field(",", help="multi-label: separator of labels given as one string")
    head: str = field("linear", help="task head: linear on the pooled state (saved as a standard HF "
                                     "*ForSequenceClassification), a BiLSTM / 1-layer transformer over "
                                     "the token states, or mean pooling + linear (sentence encoders)", choices=HEADS)
    seq_len: int = field(128, help="longest text in tokens (longer texts are truncated)")
    batch_size: int = field(16, help="texts per micro-batch")
    select: str = field("macro_f1", help="validation metric that picks the best checkpoint and drives "
                                         "--patience", choices=("macro_f1", "accuracy", "loss"))
    augment_attack: list[str] = field(default_factory=list, choices=ATTACKS,
                                      help="add attacked copies of training texts made by this attack recipe "
                                           "(repeatable; see `genforge robustness eval`)")
    augment_ratio: float = field(0.5, help="attacked copies per training text, per recipe: 0.5 = half the texts "
                                           "get one, 3 = every text gets three (differently seeded)",
                                 needs=("augment_attack",))
    augment_model: Path | None = field(None, help="make the copies by attacking this classifier (e.g. a first "
                                                  "run on the same data); default: random edits of the recipe",
                                          needs=("augment_attack",))
    augment_random_ratio: float = field(0.0, help="with --augment-model: also this many random-edit copies per "
                                                  "text and recipe, so an edit the attack makes mostly to one "
                                                  "class is not learnt as a sign of that class",
                                        needs=("augment_model",))
    correct_typos: bool = field(False, help="map misspelt words back to known words (English + the training "
                                            "texts'; Chinese same-sound characters and pinyin from their "
                                            "context) before the model reads a text, in training and wherever "
                                            "the classifier is used: typo attacks lose most of their force")
    teacher: list[Path] = field(default_factory=list, help="learn also from this classifier's probabilities "
                                                           "(same labels, any architecture; repeat: their mean)")
    distill_weight: float = field(0.5, help="with --teacher: share of the loss that is the distance to the "
                                            "teacher (the rest is the gold labels' cross-entropy)",
                                  needs=("teacher",))
    distill_temperature: float = field(2.0, help="with --teacher: softening temperature of both distributions",
                                       needs=("teacher",))

    def check(self) -> None:
        super().check()
        if self.multi_label and not self.label_sep:
            raise ConfigError("--label-sep must not be empty")
        if not 0 < self.augment_ratio <= MAX_COPIES:
            raise ConfigError(f"--augment-ratio must be in (0, {MAX_COPIES}], got {self.augment_ratio}")
        if self.augment_model is not None and (not self.augment_attack or self.multi_label):
            raise ConfigError("--augment-model needs --augment-attack RECIPE and a single-label task")
        if not 0 <= self.augment_random_ratio <= MAX_COPIES:
            raise ConfigError(f"--augment-random-ratio must be in [0, {MAX_COPIES}], got {self.augment_random_ratio}")
        if not 0 <= self.distill_weight <= 1:
            raise ConfigError(f"--distill-weight must be in [0, 1], got {self.distill_weight}")
        if self.distill_temperature <= 0:
            raise ConfigError(f"--distill-temperature must be > 0, got {self.distill_temperature}")
        if self.augment_random_ratio and self.augment_model is None:
            raise ConfigError("--augment-random-ratio adds random copies beside --augment-model's attacked ones; "
                              "without a model every copy is random: use --augment-ratio")


@dataclass(kw_only=True)
class SftConfig(FinetuneConfig):
    """Supervised fine-tuning of a causal LM on chat dialogues (OpenAI `messages` or ShareGPT JSONL)."""

    seq_len: int = field(256, help="longest training sequence in tokens (at most the model's positions); "
                                   "longer dialogues lose their oldest turns")
    batch_size: int = field(8, help="sequences per micro-batch")
    lr: float = field(1e-4, help="peak learning rate")
    train_on_prompt: bool = field(False, help="also learn the system/user tokens (default: assistant tokens only)")
    pack: bool = field(False, help="pack several short dialogues into one sequence (fewer pad tokens)")
    system: str | None = field(None, help="system message added to dialogues that have none")

    def check(self) -> None:
        super().check()
        check_text("--system", self.system)


@dataclass(kw_only=True)
class DpoConfig(FinetuneConfig):
    """Direct Preference Optimization of a chat model on preference pairs (`genforge feedback export`'s
    preference.jsonl: prompt messages, chosen and rejected answers)."""

    seq_len: int = field(256, help="longest prompt + answer in tokens (at most the model's positions); longer "
                                   "prompts lose their oldest turns")
    batch_size: int = field(8, help="preference pairs per micro-batch (each pair is two sequences)")
    lr: float = field(5e-6, help="peak learning rate (DPO wants ~10x less than SFT; LoRA ~10x more)")
    beta: float = field(0.1, help="DPO temperature: how far the model may move from the reference (smaller = "
                                  "further)")
    sft_weight: float = field(0.0, help="add this times the chosen answers' NLL per token to the loss (RPO): keeps "
                                        "their likelihood from falling while the gap widens")

    def check(self) -> None:
        super().check()
        if not 0 < self.beta < float("inf"):
            raise ConfigError(f"--beta must be a finite number > 0, got {self.beta}")
        if not 0 <= self.sft_weight < float("inf"):
            raise ConfigError(f"--sft-weight must be a finite number >= 0, got {self.sft_weight}")
        if self.adversarial != "none":
            raise ConfigError("--adversarial applies to classification, SFT and pretraining, not to DPO")
        if self.dropout != -1:
            raise ConfigError("--dropout does not apply to DPO: dropout is off while it trains (as in TRL), so "
                              "that its log-ratios to the reference measure the training, not dropout noise")


@dataclass(kw_only=True)
class AverageConfig(Config):
    """Weight averaging of fine-tuned models of one architecture (WiSE-FT, model soups)."""

    model: list[Path] = field(default_factory=list, help="a fine-tuned model folder (repeat: at least two; "
                                                          "the first is the parent in the lineage)")
    weight: list[float] = field(default_factory=list, help="weight of each --model, in order (repeat; "
                                                           "normalised to sum 1; default: equal)")
    out: Path = field(None, help="output folder: the averaged model, same files as the first --model")

    def check(self) -> None:
        if len(self.model) < 2:
            raise ConfigError(f"give at least two models to average: --model A --model B (got {len(self.model)})")
        if self.out is None:
            raise ConfigError("give the output folder: --out DIR")
        if self.weight and len(self.weight) != len(self.model):
            raise ConfigError(f"give one --weight per --model: {len(self.weight)} weights for "
                              f"{len(self.model)} models")
        if any(not 0 <= w < float("inf") for w in self.weight) or (self.weight and sum(self.weight) <= 0):
            raise ConfigError(f"--weight values must be >= 0 and finite, with a positive sum, got {self.weight}")
        if any(Path(m).resolve() == Path(self.out).resolve() for m in self.model):
            raise ConfigError("--out must not be one of the --model folders")


@dataclass(kw_only=True)
class PredictConfig(Config):
    """Label texts with a fine-tuned classifier."""

    model: Path = field(None, help="a `genforge finetune classify` run folder")
    text: list[str] = field(default_factory=list, help="a text to classify (repeatable)")
    data: Path | None = field(None, help="file of texts (CSV, TSV, JSONL, JSON or plain text, one per line)")
    text_field: str = field("text", help="column/key holding the text in --data")
    out: Path | None = field(None, help="write {text, label, probs} per line here (JSONL)")
    batch_size: int = field(32, help="texts per forward pass")
    threshold: float = field(0.5, help="multi-label: probability above which a label is predicted")
    resume: bool = field(False, help="continue the interrupted run of --out from its OUT.partial file: its "
                                     "predictions are kept (the settings must be the same)")

    def check(self) -> None:
        if self.model is None:
            raise ConfigError("give the classifier folder: --model DIR")
        if self.resume and self.out is None:
            raise ConfigError("--resume continues an interrupted --out run: give its --out FILE")
        if not self.text and self.data is None:
            raise ConfigError("give --text TEXT (repeatable) or --data FILE")
        if self.text and self.data is not None:
            raise ConfigError("give either --text or --data, not both")
        if self.batch_size <= 0:
            raise ConfigError(f"--batch-size must be positive, got {self.batch_size}")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"--threshold must be in (0, 1), got {self.threshold}")


@dataclass(kw_only=True)
class ChatConfig(Config):
    """Interactive multi-turn chat with a (fine-tuned) causal LM in the terminal, streaming."""

    model: Path = field(None, help="causal LM folder (full model, merged LoRA, or a LoRA adapter run)")
    system: str | None = field(None, help="system message that opens the conversation")
    max_new_tokens: int = field(256, help="most tokens per reply")
    temperature: float = field(0.7, help="sampling temperature; 0 = greedy")
    top_p: float = field(0.9, help="nucleus sampling mass; 1 = off")
    seed: int | None = field(None, help="random seed for reproducible replies")

    def check(self) -> None:
        if self.model is None:
            raise ConfigError("give the model folder: --model DIR")
        if self.max_new_tokens <= 0:
            raise ConfigError(f"--max-new-tokens must be positive, got {self.max_new_tokens}")
        check_sampling(self.temperature, 0, self.top_p, 1.0)  # here, before the model loads and a message is typed
        check_text("--system", self.system)


@dataclass(kw_only=True)
class TuneConfig(Config):
    """Hyper-parameter search with Optuna over a fine-tuning config (search space in YAML)."""

    space: Path = field(None, help="YAML: `task` (classify|sft|dpo), `base` (the fixed config keys) and "
                                    "`search` (key -> {low, high, log} or {choices})", argument=True)
    trials: int = field(10, help="trials to run now (added to those already in the study)")
    out: Path | None = field(None, help="study folder (study.db, trials, best.yaml, trials.png); "
                                        "default: the YAML's `out`")
    study_name: str = field("genforge", help="study name inside the SQLite file")
    seed: int = field(0, help="sampler seed")

    def check(self) -> None:
        if self.space is None:
            raise ConfigError("give the search-space YAML: genforge tune CONFIG.yaml")
        if self.trials <= 0:
            raise ConfigError(f"--trials must be positive, got {self.trials}")
