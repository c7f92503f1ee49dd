"""Configs of `genforge app support build|calibrate|ask|serve|eval|tickets|from-bitext`.

Light on purpose (no torch/numpy import): the CLI builds its flags from these dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genforge.config import Config, field, not_utf8
from genforge.errors import ConfigError

DEFAULT_SYSTEM = ("You are a customer support assistant. Answer the customer's request helpfully, using the "
                  "numbered knowledge-base passages when they are relevant.")
HANDOFF = ("I'm not able to answer that reliably, so I've passed your question to a member of our team "
           "(ticket #{ticket}). They will get back to you here.")
REBUILD = "build the assistant again with `genforge app support build`"  # the remedy for a damaged folder


def _positive(cfg: object, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be > 0; got {getattr(cfg, name)}")


@dataclass
class BuildConfig(Config):
    kb: list[Path] = field(default_factory=list, help="knowledge base: FAQ files (CSV/TSV/JSONL/JSON with question "
                           "and answer, optional id) and documents (Markdown, text, HTML) or folders of them "
                           "(repeatable)")
    history: Path | None = field(None, help="support conversations to fine-tune the chat model on (JSONL: OpenAI "
                                           "`messages` or ShareGPT `conversations`); none = FAQ and hand-off only")
    out: Path = field(None, help="assistant folder to write")
    val: Path | None = field(None, help="calibration questions (CSV/JSONL: text, label = the FAQ id, or 'oos' for "
                                        "questions a person must take); default: hash bucket 8 of the FAQ "
                                        "questions and of --oos")
    oos: Path | None = field(None, help="out-of-scope questions (CSV/JSONL with text, or one per line): "
                                        "hand-off examples for the intent classifier and the calibration")
    encoder: Path | None = field(None, help="sentence encoder folder for dense retrieval and the intent "
                                            "classifier (default: the packaged all-MiniLM-L6-v2)")
    intent_base: Path | None = field(None, help="encoder the intent classifier is fine-tuned from (default: "
                                                "--encoder)")
    model: Path | None = field(None, help="causal LM to fine-tune on --history (default: pretrain the `small` "
                                          "decoder briefly on the history and knowledge base)")
    classify: bool = field(True, help="train an intent/out-of-scope classifier (genforge finetune classify) when "
                                      "the FAQ has ids")
    classify_steps: int = field(300, help="optimizer steps of the intent classifier")
    classify_batch: int = field(32, help="texts per batch of the intent classifier")
    classify_lr: float = field(2e-4, help="peak learning rate of the intent classifier (MiniLM under-fits at 5e-5)")
    pretrain_minutes: float = field(5.0, help="minutes of pretraining the small decoder (when no --model)")
    sft_steps: int = field(400, help="optimizer steps of SFT on the history")
    sft_minutes: float = field(0.0, help="stop SFT after this many minutes (0 = only --sft-steps)")
    lora_r: int = field(8, help="LoRA rank of the SFT (0 = full fine-tuning)")
    seq_len: int = field(384, help="longest SFT/pretraining sequence in tokens (passages are in the prompt)")
    vocab_size: int = field(4096, help="tokenizer vocabulary when pretraining from scratch")
    chunk_chars: int = field(800, help="document chunk length in characters")
    overlap: int = field(200, help="characters shared by neighbouring document chunks")
    prompt_passages: int = field(2, help="retrieved passages put in the chat model's prompt")
    passage_chars: int = field(400, help="characters of each passage in the prompt")
    min_inscope_accuracy: float = field(0.93, help="calibration: in-scope accuracy the hand-off thresholds must "
                                                   "keep on the validation questions")
    faq_precision: float = field(0.95, help="calibration: precision a confidence must reach on validation to "
                                            "return the FAQ answer verbatim")
    system: str = field(DEFAULT_SYSTEM, help="system prompt of the chat model")
    seed: int = field(0, help="random seed")

    def check(self) -> None:
        from genforge.data.tokenizer import MIN_VOCAB_SIZE  # a light module-level constant

        if not self.kb:
            raise ConfigError("give the knowledge base: --kb FILE_OR_FOLDER (repeatable)")
        if self.out is None:
            raise ConfigError("give the output folder: --out DIR")
        _positive(self, "classify_steps", "classify_batch", "classify_lr", "sft_steps", "seq_len", "chunk_chars",
                  "prompt_passages", "passage_chars")
        if self.vocab_size < MIN_VOCAB_SIZE:
            raise ConfigError(f"--vocab-size must be at least {MIN_VOCAB_SIZE} (256 byte symbols + special tokens); "
                              f"got {self.vocab_size}")
        if not 0 <= self.overlap < self.chunk_chars:
            raise ConfigError(f"--overlap must be in [0, chunk_chars); got {self.overlap}")
        if self.pretrain_minutes < 0 or self.sft_minutes < 0 or self.lora_r < 0:
            raise ConfigError("--pretrain-minutes, --sft-minutes and --lora-r must be >= 0")
        for name in ("min_inscope_accuracy", "faq_precision"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be in (0, 1]; got {getattr(self, name)}")


@dataclass
class CalibrateConfig(Config):
    assistant: Path = field(None, help="assistant folder made by `genforge app support build`")
    val: Path = field(None, help="calibration questions (CSV/JSONL: text, label = the FAQ id, or 'oos')")
    min_inscope_accuracy: float = field(0.93, help="in-scope accuracy the hand-off thresholds must keep")
    faq_precision: float = field(0.95, help="precision a confidence must reach to return the FAQ answer verbatim")

    def check(self) -> None:
        if self.assistant is None or self.val is None:
            raise ConfigError("give --assistant DIR and --val FILE")
        for name in ("min_inscope_accuracy", "faq_precision"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be in (0, 1]; got {getattr(self, name)}")


@dataclass
class AskConfig(Config):
    assistant: Path = field(None, help="assistant folder made by `genforge app support build`")
    question: list[str] = field(default_factory=list, help="a customer message; several make one conversation",
                                argument=True)
    max_new_tokens: int = field(160, help="most tokens of a generated answer")
    db: str | None = field(None, help="database URL for the session and tickets (default: $GENFORGE_DB_URL or "
                                      "sqlite:///~/.genforge/serve.db)")

    def check(self) -> None:
        if self.assistant is None:
            raise ConfigError("give the assistant folder: --assistant DIR")
        if not self.question:
            raise ConfigError("give a question: genforge app support ask --assistant DIR \"QUESTION\"")
        if not all(q.strip() for q in self.question):
            raise ConfigError("a question is empty: give the customer's message as text")
        for question in self.question:  # argv bytes that were not UTF-8 arrive as surrogate escapes
            problem = not_utf8(question)
            if problem:
                raise ConfigError(f"the question is not UTF-8 text ({problem}); set the terminal (or the config file) "
                                  "to UTF-8")
        _positive(self, "max_new_tokens")


@dataclass
class SupportServeConfig(Config):
    assistant: Path = field(None, help="assistant folder made by `genforge app support build`")
    name: str = field("support", help="model name of the assistant on /v1/chat/completions (OpenAI clients)")
    host: str = field("127.0.0.1", help="interface to listen on; a non-loopback host needs an API key")
    port: int = field(8000, help="TCP port")
    api_key: str | None = field(None, help="static bearer key clients must send (default: $GENFORGE_API_KEY)")
    insecure_open: bool = field(False, help="allow serving on a non-loopback host without any API key")
    db: str | None = field(None, help="database URL for sessions, tickets, responses and feedback (default: "
                                      "$GENFORGE_DB_URL or sqlite:///~/.genforge/serve.db)")
    blocklist: list[Path] = field(default_factory=list, help="file of blocked terms (repeatable)")
    moderation_model: Path | None = field(None, help="a classifier run folder used as a moderation model")
    redact_pii: bool = field(True, help="replace e-mails, phones, ID/card numbers and IPs in answers")
    max_new_tokens: int = field(160, help="most tokens of a generated answer")
    threads: int = field(0, help="torch CPU threads; 0 = torch's default")
    log_level: str = field("info", help="log level", choices=("debug", "info", "warning", "error"))

    def check(self) -> None:
        if self.assistant is None:
            raise ConfigError("give the assistant folder: --assistant DIR")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535; got {self.port}")
        _positive(self, "max_new_tokens")


@dataclass
class SupportEvalConfig(Config):
    assistant: Path = field(None, help="assistant folder made by `genforge app support build`")
    data: Path = field(None, help="test questions (CSV/JSONL: text, label = FAQ id or 'oos')")
    out: Path | None = field(None, help="write report.json and the per-question results here")
    limit: int = field(0, help="evaluate only the first N questions (0 = all)")
    max_new_tokens: int = field(160, help="most tokens of a generated answer")
    threads: int = field(0, help="torch CPU threads; 0 = torch's default (1 is fastest for one question at a "
                                 "time on a busy machine)")

    def check(self) -> None:
        if self.assistant is None or self.data is None:
            raise ConfigError("give --assistant DIR and --data FILE")
        if self.limit < 0 or self.threads < 0:
            raise ConfigError(f"--limit and --threads must be >= 0; got {self.limit}, {self.threads}")


@dataclass
class TicketsConfig(Config):
    db: str | None = field(None, help="database URL (default: $GENFORGE_DB_URL or sqlite:///~/.genforge/serve.db)")
    status: str = field("open", help="which tickets to list", choices=("open", "closed", "all"))
    close: list[int] = field(default_factory=list, help="close the ticket with this id (repeatable)")
    limit: int = field(50, help="most tickets listed, newest first")


@dataclass
class FromBitextConfig(Config):
    data: Path = field(None, help="the shared data folder (holds bitext_customer_support/ and clinc150/)")
    out: Path = field(None, help="folder for faq.csv, history.jsonl, val.csv, test.csv and oos.csv")
    max_history: int = field(0, help="most training dialogues written to history.jsonl (0 = all)")

    def check(self) -> None:
        if self.data is None or self.out is None:
            raise ConfigError("give --data SHARED_DATA_DIR and --out DIR")
