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
Streams (OutputGuard) release only text no later character can change the filtering of (`Safety.ready`),
so that what a stream sends is what the same text filtered whole gives, however it is split.
"""

from __future__ import annotations

import bisect
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genforge.adversarial.transforms import CJK, HOMOGLYPHS, INVISIBLE
from genforge.data.pii import EMAIL_LOCAL_MAX, scrub_pii
from genforge.errors import ConfigError

ACTIONS = ("block", "redact", "flag")
ROUTES = ("chat", "completions")
UNSAFE_LABELS = ("unsafe", "toxic", "harmful", "offensive", "abusive", "hate", "spam")
_DROP = frozenset(INVISIBLE) | {"\u00ad", "\u180e", "\u200e", "\u200f"}
_LATIN = {form: k.lower() for k, v in HOMOGLYPHS.items() if k.isalpha() for form in (v, v.lower())}
_SEP = r"[\W_]*"
_WORD = re.compile(r"[^\W_]")  # what a word-bounded term may not touch
_IS_CJK = re.compile(rf"[{CJK}]")
# Every character a PII pattern of genforge.data.pii can match or look ahead at, besides digits (`\d`: any
# Unicode digit, str.isdecimal) and a space right after a digit or ")" (phone and card numbers) or an upper-case
# ASCII letter (an IBAN's groups: "GB82 WEST 1234 ..."): anything else ends every PII match, and no pattern
# reads past it.
_PII_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._%+-@:()")
# After an ASCII letter or digit no PII pattern may start (each one's look-behind refuses it).
_NO_START_AFTER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
# In text without a digit, "@" or ":" the only PII patterns that can get past their first characters are the
# e-mail's (its local part is at most EMAIL_LOCAL_MAX characters, then "@" is needed) and IPv6's look-ahead
# (at most 4 hex digits, then ":" is needed): every attempt there reads at most this many characters.
_NO_DIGIT_REACH = EMAIL_LOCAL_MAX + 1


def normalise(text: str) -> tuple[str, list[int]]:
    """(the normalised text, for each of its characters the index of the original character it came from)."""
    out, where = [], []
    for i, ch in enumerate(text):
        if ch in _DROP:
            continue
        for c in unicodedata.normalize("NFKC", ch):
            low = c.lower()
            mapped = _LATIN.get(c, _LATIN.get(low, low))  # may be two characters: "İ".lower() is "i̇"
            out.append(mapped)
            where += [i] * len(mapped)
    return "".join(out), where


def term_chars(term: str) -> list[str]:
    """A term's normalised characters, without the spaces and punctuation a hit may put anywhere."""
    return [c for c in normalise(term)[0] if not (c.isspace() or unicodedata.category(c)[0] in "PZ")]


def term_pattern(term: str) -> str | None:
    chars = term_chars(term)
    if not chars:
        return None
    body = _SEP.join(re.escape(c) for c in chars)
    return body if _IS_CJK.search("".join(chars)) else rf"(?<![^\W_]){body}(?![^\W_])"


def pending_pattern(term: str) -> str | None:
    """A hit of `term` begun but not decided at the end of a text (searched with endpos = that end): some of
    its characters and any separators after them, or, for a word-bounded term, all of them (the character
    that comes next decides). None when no such state exists (a one-character Chinese term)."""
    chars = term_chars(term)
    cjk = _IS_CJK.search("".join(chars)) is not None
    if not chars or (cjk and len(chars) == 1):
        return None
    rest = r"(?!)" if cjk else r"\Z"  # after the whole term
    for c in reversed(chars[1:]):
        rest = rf"{_SEP}(?:\Z|{re.escape(c)}{rest})"
    return rf"{re.escape(chars[0])}{rest}" if cjk else rf"(?<![^\W_]){re.escape(chars[0])}{rest}"


def pii_barrier(text: str, i: int) -> bool:
    """Whether text[i] ends every PII match that reaches it: no PII pattern matches it, nor reads past it."""
    ch = text[i]
    if ch == " ":
        return i == 0 or not (text[i - 1].isdecimal() or text[i - 1] == ")" or "A" <= text[i - 1] <= "Z")
    return ch not in _PII_CHARS and not ch.isdecimal()


def pii_settled(text: str, cut: int, inside_runs: bool = True) -> int:
    """The longest prefix `text[:c]`, c <= cut, that the PII patterns have settled: no attempt of theirs
    starting before c reads `text[c:]`. Up to the last barrier (`pii_barrier`) that holds always; inside the
    run of PII characters after it (`inside_runs`), while the run has no digit, "@" or ":", it holds at every
    c that lies at least `_NO_DIGIT_REACH` characters past every position before it where a pattern may
    start. So a long word without spaces is held until it is 65 characters long, not to its end."""
    begin = cut
    while begin > 0 and not pii_barrier(text, begin - 1):
        begin -= 1
    if not inside_runs:
        return begin
    end = begin
    while end < cut and not (text[end].isdecimal() or text[end] in "@:"):
        end += 1
    starts = [p for p in range(begin, end) if p == begin or text[p - 1] not in _NO_START_AFTER]
    settled = end
    for p in reversed(starts):  # the last start before `settled` must lie a reach before it
        if p + _NO_DIGIT_REACH <= settled:
            return settled
        settled = p
    return begin


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
        begun = [p for t, _ in listed if (p := pending_pattern(t))]
        self.pending = re.compile("|".join(f"(?:{p})" for p in begun)) if begun else None
        # the first characters of word-bounded terms, which look back at the character before them
        self.bounded = {term_chars(t)[0] for t, p in listed if p.startswith("(?<!")}
        self.policies = policies or dict.fromkeys(ROUTES, "block")
        self.moderator = moderator
        self.redact_pii = redact_pii
        self.refusal = refusal
        # A redacted term's *** changes the text the PII patterns then read: cuts inside a run are worked out
        # on the text as generated, so with a redacting blocklist a run waits for its end.
        self.cuts_runs = redact_pii and not (self.blocklist and "redact" in self.policies.values())

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

    def ready(self, text: str, start: int = 0) -> int:
        """How much of a growing output may be released: the longest prefix `text[:cut]` that is settled,
        i.e. no pattern (blocklist or PII) tried at a position before `cut` reads `text[cut:]`. Then the
        checks of any longer text find before `cut` exactly the hits they find in `text[:cut]`, none across
        it, so the filtered prefix is a prefix of the filtered whole, whatever comes after and however the
        stream is split. `start` is a cut found settled before (a longer text stays settled there).

        What waits: PII patterns run over letters, digits, `._%+-@:()` (and a space after a digit or ")"),
        so the last run of those (an unfinished word, e-mail, number) waits for a character outside them; a
        blocklist term waits from its first character while the text so far could still complete it
        (`k i l`, `炸`), or, word-bounded, while the next character could make it part of a longer word
        (`kill` -> `killer`). Nothing else waits: Chinese streams as it comes. A long run without such an end
        (a word repeated without spaces) streams once it is 65 characters long while it has no digit, "@" or
        ":" (`pii_settled`; not with a redacting blocklist), and otherwise waits for its end.
        """
        cut = len(text)
        norm = where = None
        while cut > start:
            if self.redact_pii and (settled := pii_settled(text, cut, self.cuts_runs)) < cut:
                cut = settled
                continue
            if self.pending is None:
                return cut
            if norm is None:  # normalised from the last character before `start` kept (a term's look-behind)
                base = start - 1
                while base > 0 and text[base] in _DROP:
                    base -= 1
                base = max(base, 0)
                norm, where = normalise(text[base:])
                where = [base + i for i in where]
            pos = bisect.bisect_left(where, start)
            m = self.pending.search(norm, pos, bisect.bisect_left(where, cut))
            if m is None:
                return cut
            cut = where[m.start()]
        return start

    def separates(self, text: str, cut: int) -> bool:
        """Whether the checks of what follows a settled `text[:cut]` never depend on what precedes `cut`, so
        that `text[cut:]` filters on its own as it does after it. PII patterns look back one character, for
        which a cut after a PII barrier is the same as the start of a text (a cut inside a run is not). A
        word-bounded term looks back at the last normalised character: that must be no letter or digit, or
        the next one (when known) must begin no such term (Chinese has no spaces to cut at).
        """
        if cut > 0 and self.redact_pii and not pii_barrier(text, cut - 1):
            return False
        if cut == 0 or not self.bounded:
            return True
        last = normalise(text[cut - 1])[0][-1:]
        if text[cut - 1] not in _DROP and last and _WORD.match(last) is None:
            return True
        after = next((ch for ch in text[cut:] if ch not in _DROP), "")
        first = normalise(after)[0][:1]
        return bool(first) and first not in self.bounded


class OutputGuard:
    """A stream's text through the output checks: releases the filtered text of its settled prefix (see
    `Safety.ready`), blocklist without the classifier; the classifier judges the whole text at the end.

    What is released is always a prefix of what the checks make of the whole text: the filter runs over a
    settled prefix (never over a piece alone, whose hits could differ at its edges), and what is sent is cut
    from that by length only because it starts with everything sent before. So that a long stream is not
    filtered whole at every piece, the settled prefix is filtered from its last cut that `separates` on.
    """

    def __init__(self, safety: Safety, route: str):
        self.safety, self.route = safety, route
        self.raw, self.sent = "", ""
        self.cut = 0  # raw[:cut] is settled and its filtered text sent
        self.anchor, self.anchored = 0, 0  # a cut that separates, and the length of raw[:anchor] filtered
        self.blocked = False

    def push(self, piece: str) -> str:
        self.raw += piece
        if self.blocked or not piece:
            return ""
        cut = self.safety.ready(self.raw, self.cut)
        if cut == self.cut:
            return ""
        if self.anchor < self.cut and self.safety.separates(self.raw, self.cut):
            self.anchor, self.anchored = self.cut, len(self.sent)
        decision = self.safety.filter(self.route, self.raw[self.anchor:cut], "output", classify=False)
        if decision.action == "block":
            self.blocked = True
            return ""
        self.cut = cut
        return self._release(self.sent[:self.anchored] + decision.text)

    def finish(self) -> Decision:
        """The decision on the whole text; `text` is what is still to send (a block sends nothing more)."""
        decision = self.safety.filter(self.route, self.raw, "output")
        if self.blocked or decision.action == "block":
            self.blocked = True
            return Decision("output", "block", decision.reasons, "")
        self.cut = len(self.raw)
        return Decision("output", decision.action, decision.reasons, self._release(decision.text))

    def _release(self, clean: str) -> str:
        """The part of `clean` (the filtered text of a longer settled prefix) not sent yet."""
        if not clean.startswith(self.sent):  # cannot happen for settled prefixes; never send garbled text
            raise RuntimeError("output guard: the filtered stream no longer extends what was sent")
        out, self.sent = clean[len(self.sent):], clean
        return out


def build_safety(cfg: Any) -> Safety:
    """The Safety of a ServeConfig (its blocklist files, moderation model and policies)."""
    moderator = (load_moderator(Path(cfg.moderation_model), list(cfg.moderation_labels), cfg.moderation_threshold)
                 if cfg.moderation_model else None)
    return Safety(read_blocklists([Path(p) for p in cfg.blocklist]), parse_policies(list(cfg.policy)), moderator,
                  cfg.redact_pii, cfg.refusal)
