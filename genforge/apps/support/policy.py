"""When to answer from the FAQ, when to generate, when to hand off, and how those thresholds are chosen.

Which entry answers comes first: the classifier's intent replaces retrieval's top entry from the intent
probability that makes the most validation questions right (`calibrate_intent`). Then two signals per
question: the dense cosine of the best fused hit (how close the knowledge base comes)
and, when an intent classifier exists, its out-of-scope score (P(oos) when it was trained with hand-off
examples, else 1 - the top intent's probability). The thresholds are calibrated on validation questions
(in-scope ones labelled with their FAQ id, out-of-scope ones 'oos'): the hand-off pair hands off the most
out-of-scope questions among the pairs that keep the in-scope accuracy (answered and right) at the target, and the
FAQ threshold is the lowest confidence from which the top FAQ answer is right often enough to be
returned verbatim, counted over the questions the policy would answer from the FAQ (off-topic ones that pass
the hand-off included, as wrong). Nothing is a guessed constant; calibration.json records what was chosen and why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

OOS = "oos"
GRID = 501  # most confidence thresholds tried (quantiles beyond); the classifier score gets a fifth


@dataclass
class Thresholds:
    handoff_confidence: float = -math.inf  # below it: hand off
    oos: float = math.inf  # classifier out-of-scope score from which to hand off
    faq: float = math.inf  # from it: the FAQ answer verbatim
    intent: float = math.inf  # classifier intent probability from which its intent, not retrieval, picks the entry

    def to_dict(self) -> dict[str, float | None]:
        """Full floats (JSON keeps a float exactly): a threshold sits exactly at an observed value, and a rounded
        one would move validation questions to the other side of it."""
        return {k: (None if math.isinf(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Thresholds:
        default = cls()
        return cls(**{k: getattr(default, k) if d.get(k) is None else float(d[k]) for k in asdict(default)})


def decide(confidence: float, oos_score: float | None, top_kind: str | None, th: Thresholds,
           can_generate: bool) -> str:
    """'handoff', 'faq' (the FAQ answer or document passage verbatim) or 'generate'."""
    if top_kind is None or confidence < th.handoff_confidence or (oos_score is not None and oos_score >= th.oos):
        return "handoff"
    if not can_generate or (top_kind == "faq" and confidence >= th.faq):
        return "faq"
    return "generate"


def _candidates(values: np.ndarray, edges: np.ndarray, never: float, grid: int) -> np.ndarray:
    """Every observed value (a threshold just at it is exact); when there are many, `grid` quantiles plus
    the `edges` (the values at which a hand-off example changes side, so F1 can change); plus `never`."""
    values = np.unique(values)
    if len(values) > grid:
        values = np.unique(np.concatenate([np.quantile(values, np.linspace(0, 1, grid)), edges]))
    return np.concatenate([values, [never]])


def f1(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    tp = float((pred & truth).sum())
    precision = tp / pred.sum() if pred.sum() else 0.0
    recall = tp / truth.sum() if truth.sum() else 0.0
    return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)


def calibrate_intent(prob: np.ndarray, intent_correct: np.ndarray, retrieval_correct: np.ndarray,
                     is_oos: np.ndarray) -> tuple[float, float]:
    """(threshold, in-scope accuracy): the classifier's intent is used from `threshold` on (inf = never)."""
    prob, inscope = np.asarray(prob), ~np.asarray(is_oos, bool)
    intent_correct, retrieval_correct = np.asarray(intent_correct, bool), np.asarray(retrieval_correct, bool)
    best = (float(retrieval_correct[inscope].mean()) if inscope.any() else 0.0, math.inf)
    for t in _candidates(prob[inscope], np.array([]), math.inf, GRID)[:-1]:
        accuracy = float(np.where(prob >= t, intent_correct, retrieval_correct)[inscope].mean())
        if accuracy > best[0]:
            best = (accuracy, float(t))
    return best[1], best[0]


def calibrate(confidence: np.ndarray, oos_score: np.ndarray | None, correct: np.ndarray, is_oos: np.ndarray,
              min_accuracy: float, faq_precision: float, is_faq: np.ndarray | None = None) -> tuple[Thresholds, dict]:
    """Thresholds from validation signals; `correct`: the top hit is the right entry (in-scope rows)."""
    confidence, correct, is_oos = np.asarray(confidence), np.asarray(correct, bool), np.asarray(is_oos, bool)
    inscope = ~is_oos
    ceiling = float(correct[inscope].mean()) if inscope.any() else 0.0
    target = min(min_accuracy, ceiling - 0.01)  # a target above what retrieval reaches cannot be kept
    observed = np.unique(confidence)  # hand off below t: the first observed value above a hand-off example
    above = np.searchsorted(observed, confidence[is_oos], side="right")
    conf_grid = _candidates(confidence, observed[above[above < len(observed)]], -math.inf, GRID)
    oos_grid = np.array([math.inf]) if oos_score is None else \
        _candidates(np.asarray(oos_score), np.asarray(oos_score)[is_oos], math.inf, GRID // 5)
    best: tuple | None = None
    for t_oos in oos_grid:
        flagged = np.asarray(oos_score) >= t_oos if oos_score is not None else np.zeros(len(confidence), bool)
        for t_conf in conf_grid:
            handoff = flagged | (confidence < t_conf)
            accuracy = float((correct & ~handoff)[inscope].mean()) if inscope.any() else 0.0
            if accuracy < target:
                continue
            p, r, f = f1(handoff, is_oos)
            # the most hand-off recall, then the fewest in-scope hand-offs; without hand-off examples, the most
            # cautious pair. Not the most F1: F1 depends on the share of off-topic questions, which differs
            # between a validation set and the traffic (CLINC150: 3% of val, 18% of test)
            key = (r, -float(handoff[inscope].sum()), accuracy) if is_oos.any() else (float(handoff.mean()), accuracy)
            if best is None or key > best[0]:
                best = (key, t_conf, t_oos, accuracy, p, r, f)
    if best is None:  # nothing keeps the target: never hand off on these signals
        best = ((0.0, ceiling), -math.inf, math.inf, ceiling, 0.0, 0.0, 0.0)
    _, t_conf, t_oos, accuracy, p, r, f = best
    # precision over what decide() answers from the FAQ: every question past the hand-off whose top hit is a FAQ
    # entry, off-topic ones included (their FAQ answer is wrong)
    answered = confidence >= t_conf
    if oos_score is not None:
        answered &= np.asarray(oos_score) < t_oos
    faq_ok = answered & (is_faq if is_faq is not None else True)
    t_faq = math.inf
    for t in np.sort(np.unique(confidence[faq_ok])) if faq_ok.any() else []:
        above = faq_ok & (confidence >= t)
        if (correct & inscope)[above].mean() >= faq_precision:
            t_faq = float(t)
            break
    th = Thresholds(float(t_conf), float(t_oos), t_faq)
    report = {"thresholds": th.to_dict(), "val_inscope": int(inscope.sum()), "val_oos": int(is_oos.sum()),
              "entry_accuracy": round(ceiling, 4), "target_inscope_accuracy": round(target, 4),
              "inscope_accuracy": round(accuracy, 4), "handoff_precision": round(p, 4), "handoff_recall": round(r, 4),
              "handoff_f1": round(f, 4),
              "faq_share": round(float((faq_ok & inscope & (confidence >= t_faq)).sum() / max(inscope.sum(), 1)), 4)}
    return th, report
