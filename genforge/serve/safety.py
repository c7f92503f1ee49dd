"""Moderation of inputs and outputs: blocklists (English and Chinese) normalised against evasions, an
optional genforge classifier as a moderation model, PII redaction of outputs, and a policy per route.

Evasions are undone before matching, character by character, keeping each normalised character's
position in the original text (so a hit can be redacted in place):
- NFKC: full-width letters and digits (ｋｉｌｌ) and compatibility forms become plain ones;
- zero-width characters and soft hyphens are dropped;
- homoglyphs (Cyrillic/Greek/Armenian letters drawn like Latin ones, genforge.adversarial.transforms'
  table read backwards) become the Latin letter; then everything is lower-cased;
- spacing: a term matches with any run of spaces or punctuation between its characters ("k i l l",
  "炸 弹"); English terms must stand alone (so "skill" is no hit for "kill"), Chinese ones need not.
Policies: "block" answers with a refusal (finish_reason "content_filter"), "redact" replaces the hit
with *** (a classifier hit cannot be redacted and blocks), "flag" lets the text through and marks the
decision for human review. PII (e-mails, phones, ID/card numbers, IPs) in outputs is always replaced by
genforge.data.pii's typed placeholders while `redact_pii` is on, whatever the policy.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genforge.adversarial.transforms import CJK, HOMOGLYPHS, INVISIBLE
from genforge.data.pii import scrub_pii
from genforge.errors import ConfigError

ACTIONS = ("block", "redact", "flag")
ROUTES = ("chat", "completions")
UNSAFE_LABELS = ("unsafe", "toxic", "harmful", "offensive", "abusive", "hate", "spam")
_DROP = frozenset(INVISIBLE) | {"\u00ad", "\u180e", "\u200e", "\u200f"}
_LATIN = {form: k.lower() for k, v in HOMOGLYPHS.items() if k.isalpha() for form in (v, v.lower())}
_SEP = r"[\W_]*"
_IS_CJK = re.compile(rf"[{CJK}]")
_PII_START = re.compile(r"[\d@:]")
PII_WINDOW = 64  # characters a PII match may span back from the end of a growing stream
_WORD_TAIL = re.compile(r"[A-Za-z0-9._%+\-@:/]*\Z")  # an unfinished word, e-mail, URL or number


def normalise(text: str) -> tuple[str, list[int]]:
    """(the normalised text, for each of its characters the index of the original character it came from)."""
    out, where = [], []
    for i, ch in enumerate(text):
        if ch in _DROP:
            continue
        for c in unicodedata.normalize("NFKC", ch):
            low = c.lower()
            out.append(_LATIN.get(c, _LATIN.get(low, low)))
            where.append(i)
    return "".join(out), where


def term_pattern(term: str) -> str | None:
    chars = [c for c in normalise(term)[0] if not (c.isspace() or unicodedata.category(c)[0] in "PZ")]
    if not chars:
        return None
    body = _SEP.join(re.escape(c) for c in chars)
    return body if _IS_CJK.search("".join(chars)) else rf"(?<![^\W_]){body}(?![^\W_])"


def read_blocklists(paths: list[Path]) -> list[str]:
    """Terms of blocklist files: one per line, UTF-8, '#' starts a comment."""
    terms = []
    for path in paths:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read blocklist {path}: {e}") from None
        terms += [t for line in lines if (t := line.split("#", 1)[0].strip())]
    return terms


def parse_policies(specs: list[str]) -> dict[str, str]:
    """`ROUTE=ACTION` items (route chat, completions or *) -> {route: action}; unnamed routes block."""
    policies = dict.fromkeys(ROUTES, "block")
    for spec in specs:
        route, _, action = spec.partition("=")
        routes = ROUTES if route.strip() == "*" else (route.strip(),)
        if any(r not in ROUTES for r in routes) or action.strip() not in ACTIONS:
            raise ConfigError(f"--policy must be ROUTE=ACTION with ROUTE in {', '.join(ROUTES)} or * and ACTION "
                              f"in {', '.join(ACTIONS)}; got {spec!r}")
        policies.update(dict.fromkeys(routes, action.strip()))
    return policies


@dataclass
class Decision:
    """What a check found (reasons) and what the route's policy makes of it."""

    stage: str  # "input" | "output"
    action: str = "allow"  # "allow" | "block" | "redact" | "flag"
    reasons: list[str] = field(default_factory=list)
    text: str = ""  # the text to use: redacted where the action (or PII) says so


@dataclass
class Moderator:
    """A genforge classifier folder used as a moderation model: a text is unsafe when an unsafe label's
    probability reaches the threshold."""

    classifier: Any
    tokenizer: Any
    info: dict[str, Any]
    unsafe: list[str]
    threshold: float
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reasons(self, text: str) -> list[str]:
        from genforge.finetune.classifier import predict_probs

        with self.lock:
            probs = predict_probs(self.classifier, self.tokenizer, [text], seq_len=self.info["seq_len"],
                                  multi_label=self.info["multi_label"])[0].tolist()
        scores = dict(zip(self.info["labels"], probs, strict=True))
        return [f"classifier:{lab}={scores[lab]:.3f}" for lab in self.unsafe if scores[lab] >= self.threshold]


def load_moderator(folder: Path, labels: list[str], threshold: float) -> Moderator:
    from genforge.finetune.classifier import load_classifier

    classifier, tokenizer, info = load_classifier(folder)
    unsafe = [lab for lab in info["labels"] if lab in (labels or UNSAFE_LABELS)]
    if not unsafe:
        raise ConfigError(f"moderation model {folder} has labels {', '.join(info['labels'])}; name the unsafe ones "
                          "with --moderation-labels")
    return Moderator(classifier, tokenizer, info, unsafe, threshold)


class Safety:
    """The checks of one server; `active` is False when nothing is configured (no work, no audit rows)."""

    def __init__(self, terms: list[str] = (), policies: dict[str, str] | None = None, moderator: Moderator | None = None,
                 redact_pii: bool = True, refusal: str = "Sorry, I can't help with that."):
        listed = [(t, p) for t in terms if (p := term_pattern(t))]
        self.terms = [t for t, _ in listed]  # group i + 1 of `blocklist` is terms[i]
        self.blocklist = re.compile("|".join(f"({p})" for _, p in listed)) if listed else None
        self.longest = max((len(t) for t in terms), default=0)
        self.policies = policies or dict.fromkeys(ROUTES, "block")
        self.moderator = moderator
        self.redact_pii = redact_pii
        self.refusal = refusal

    @property
    def checks_input(self) -> bool:
        return self.blocklist is not None or self.moderator is not None

    @property
    def checks_output(self) -> bool:
        return self.checks_input or self.redact_pii

    def _hits(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, blocklist term) of every hit, in the original text's positions. The term as configured,
        not the text that matched it ("k i l l", "ｋｉｌｌ"): audit reasons name the terms of the blocklist."""
        if self.blocklist is None:
            return []
        norm, where = normalise(text)
        return [(where[m.start()], where[m.end() - 1] + 1, self.terms[m.lastindex - 1])
                for m in self.blocklist.finditer(norm)]

    def filter(self, route: str, text: str, stage: str, classify: bool = True) -> Decision:
        """The decision on `text` (blocking when a moderation model runs: call it from a worker thread)."""
        hits = self._hits(text)
        reasons = [f"blocklist:{h[2]}" for h in hits]
        if classify and self.moderator is not None and text.strip():
            reasons += self.moderator.reasons(text)
        action = self.policies[route] if reasons else "allow"
        if action == "redact" and any(r.startswith("classifier:") for r in reasons):
            action = "block"
        if action == "redact":
            for start, end, _ in reversed(hits):
                text = text[:start] + "***" + text[end:]
        if stage == "output" and self.redact_pii and action != "block":
            text, counts = scrub_pii(text)
            reasons += [f"pii:{kind}" for kind in counts for _ in range(counts[kind])]
            if counts and action == "allow":
                action = "redact"
        return Decision(stage, action, reasons, self.refusal if action == "block" else text)

    def ready(self, text: str) -> int:
        """How much of a growing output may be released: never a part that a hit could still grow over.

        The last, unfinished ASCII word waits (a word-bounded term or an e-mail address may still complete
        it), but never more than the window a hit can span: text without spaces (Chinese, a model repeating
        itself) would otherwise be held back whole and stream only at its end.
        """
        window = max(PII_WINDOW if self.redact_pii else 0, 2 * self.longest)
        cut = len(text) - len(_WORD_TAIL.search(text).group())
        if self.redact_pii:
            tail = max(0, len(text) - PII_WINDOW)
            m = _PII_START.search(text, tail)
            if m:  # from the start of the word holding the first digit/@/: of the window
                word = max(text.rfind(c, 0, m.start()) for c in " \t\n") + 1
                cut = min(cut, word)
        cut = max(cut, len(text) - window)
        if self.blocklist is not None:
            cut = min(cut, len(text) - 2 * self.longest)
        return max(cut, 0)


class OutputGuard:
    """A stream's text through the output checks: holds back what a hit could still cover, releases the
    rest filtered (blocklist without the classifier; the classifier judges the whole text at the end)."""

    def __init__(self, safety: Safety, route: str):
        self.safety, self.route = safety, route
        self.raw, self.sent = "", ""
        self.blocked = False

    def push(self, piece: str) -> str:
        self.raw += piece
        if self.blocked or not piece:
            return ""
        decision = self.safety.filter(self.route, self.raw[:self.safety.ready(self.raw)], "output", classify=False)
        if decision.action == "block":
            self.blocked = True
            return ""
        return self._release(decision.text)

    def finish(self) -> Decision:
        """The decision on the whole text; `text` is what is still to send (a block sends nothing more)."""
        decision = self.safety.filter(self.route, self.raw, "output")
        if self.blocked or decision.action == "block":
            self.blocked = True
            return Decision("output", "block", decision.reasons, "")
        return Decision("output", decision.action, decision.reasons, self._release(decision.text))

    def _release(self, clean: str) -> str:
        """The part of `clean` not sent yet (what was sent stays sent, even if a later hit reaches into it)."""
        if len(clean) <= len(self.sent):
            return ""
        out, self.sent = clean[len(self.sent):], clean
        return out


def build_safety(cfg: Any) -> Safety:
    """The Safety of a ServeConfig (its blocklist files, moderation model and policies)."""
    moderator = (load_moderator(Path(cfg.moderation_model), list(cfg.moderation_labels), cfg.moderation_threshold)
                 if cfg.moderation_model else None)
    return Safety(read_blocklists([Path(p) for p in cfg.blocklist]), parse_policies(list(cfg.policy)), moderator,
                  cfg.redact_pii, cfg.refusal)
