"""Configs of text generation: the sampling parameters of one request, and the `genforge generate` command.

Light on purpose (no torch import): the CLI builds its flags from `GenerateConfig` at start-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from genforge.config import Config, check_text, field
from genforge.errors import ConfigError

DTYPES = ("auto", "float32", "bfloat16")
BACKENDS = ("auto", "fast", "hf")


def check_sampling(temperature: float, top_k: int, top_p: float, repetition_penalty: float) -> None:
    """Refuse values that have no meaning, naming the flag (shared by the CLI configs, the server and the Python
    API). An infinite temperature or penalty would turn every logit into inf or 0 and sample NaNs."""
    if not 0 <= temperature < math.inf:
        raise ConfigError(f"temperature must be >= 0 and finite (0 = greedy); got {temperature}")
    if top_k < 0:
        raise ConfigError(f"top_k must be >= 0 (0 = off); got {top_k}")
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1] (1 = off); got {top_p}")
    if not 0 < repetition_penalty < math.inf:
        raise ConfigError(f"repetition_penalty must be > 0 and finite (1 = off); got {repetition_penalty}")


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence picks its next token. temperature 0 is greedy (argmax after the penalty).

    `seed` makes a sequence reproducible: every sequence draws from its own generator seeded with it,
    so a prompt's output depends on (prompt, params, seed), not on which other prompts share its batch.
    None draws a seed from torch's global generator (so `torch.manual_seed` also fixes it).
    """

    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        check_sampling(self.temperature, self.top_k, self.top_p, self.repetition_penalty)


_DEFAULT = SamplingParams()


@dataclass
class GenerateConfig(Config):
    model: Path = field(None, help="local Hugging Face causal-LM folder (a genforge run folder or any HF model)")
    prompt: str | None = field(None, help="one prompt; its completion streams to the terminal")
    prompts: Path | None = field(None, help="file of prompts: one per line, or JSONL with a \"prompt\" field per line")
    out: Path | None = field(None, help="write completions here as JSONL (prompt, completion, tokens, finish_reason)")
    chat: bool = field(False, help="wrap each prompt in the tokenizer's chat template and stop at <|im_end|>")
    max_new_tokens: int = field(128, help="most tokens to generate per prompt")
    temperature: float = field(_DEFAULT.temperature, help="sampling temperature; 0 = greedy")
    top_k: int = field(_DEFAULT.top_k, help="sample among the k most likely tokens; 0 = off")
    top_p: float = field(_DEFAULT.top_p, help="nucleus sampling: smallest token set with this probability mass; 1 = off")
    repetition_penalty: float = field(_DEFAULT.repetition_penalty,
                                      help="divide logits of tokens already seen (CTRL-style); 1 = off")
    stop: list[str] = field(default_factory=list, help="stop when the text contains this string (repeatable); "
                                                       "the stop string is not returned")
    seed: int | None = field(None, help="random seed for reproducible sampling (default: a fresh one)")
    batch_size: int = field(8, help="prompts decoded together (left-padded batch)")
    dtype: str = field("auto", help="weights/compute dtype; auto = float32 (fastest exact choice on CPU)",
                       choices=DTYPES)
    backend: str = field("auto", help="fast = genforge's Llama forward; hf = the model's own forward; "
                                      "auto = fast when the architecture allows", choices=BACKENDS)
    threads: int = field(0, help="torch CPU threads; 0 = torch's default")

    def check(self) -> None:
        if self.model is None:
            raise ConfigError("give the model folder: --model DIR")
        if (self.prompt is None) == (self.prompts is None):
            raise ConfigError("give exactly one of --prompt TEXT or --prompts FILE")
        check_text("--prompt", self.prompt)
        if self.max_new_tokens <= 0:
            raise ConfigError(f"max_new_tokens must be > 0; got {self.max_new_tokens}")
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size must be > 0; got {self.batch_size}")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0 (0 = default); got {self.threads}")
        if any(s == "" for s in self.stop):
            raise ConfigError("a stop string must not be empty")
        check_sampling(self.temperature, self.top_k, self.top_p, self.repetition_penalty)

    def sampling(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                              repetition_penalty=self.repetition_penalty, seed=self.seed)
