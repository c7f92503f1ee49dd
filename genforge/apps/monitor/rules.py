"""Alert rules (YAML) and the detectors behind them, as pure functions over window series.

    rules:
      - {name: negative-surge, kind: binomial_cusum, by: topic, threshold: 4.0, shift: 1.5, channels: [log, webhook]}
      - {name: sudden-negative, kind: ewma_z, by: topic, threshold: 3.5}
      - {name: volume-spike, kind: volume, by: topic, threshold: 5, min_ratio: 2}
      - {name: watched-negative, kind: entity_negative, by: entity, keys: [AAPL, TSLA], threshold: 0.5}
    channels:
      webhook: {url: "https://hooks.example.com/monitor"}
      email: {host: smtp.example.com, port: 587, sender: monitor@example.com, to: [risk@example.com],
              username: monitor, password_env: MONITOR_SMTP_PASSWORD, starttls: true}

The surge detectors compare each window with the EWMA baseline of the windows before it, and measure
the difference in standard errors that allow for both the window's binomial noise (small windows are
noisy) and the baseline's own excess variance (over-dispersion beyond binomial noise):
- ewma_z: z = (p - baseline) / se, alert when z >= threshold and p >= min_ratio * baseline;
- cusum: S = max(0, S + z - k), alert when S >= threshold, then S restarts at 0 (catches smaller,
  longer surges that no single window shows);
- binomial_cusum: the same sum over each window's log-likelihood ratio of its k negatives in n items under
  "the share is `shift` times the baseline" against "it is the baseline" (Page's CUSUM for a binomial
  share, the sequentially optimal test for that shift): a window weighs by its size, and the threshold is
  in nats (the mean run between false alerts grows about as e^threshold windows). Where the share itself
  varies from window to window (over-dispersion: news comes in bursts), each ratio is divided by the
  window's dispersion factor (its total variance over the binomial one), as a quasi-likelihood does;
- volume: the same z on counts with Poisson noise (variance = baseline count), from the key's first item on
  (the empty windows before it are no counts of 0);
- entity_negative: a watched entity's negative share reaches `threshold` while its baseline (from its first
  window on) is below it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from genforge.apps.monitor.analytics import Window, ewma_step
from genforge.apps.monitor.config import WINDOWS
from genforge.apps.monitor.ingest import normalise_entity
from genforge.config import from_dict, read_yaml
from genforge.errors import ConfigError

KINDS = ("ewma_z", "cusum", "binomial_cusum", "volume", "entity_negative")
CHANNELS = ("log", "webhook", "email")


@dataclass
class Rule:
    name: str
    kind: str
    by: str = "topic"
    window: str = "hour"
    threshold: float = 3.5  # z (ewma_z, volume), decision interval h (cusum; nats for binomial_cusum), negative
    # share (entity_negative)
    k: float = 0.5  # cusum: slack in standard errors
    shift: float = 1.5  # binomial_cusum: the surge to detect, as a multiple of the baseline negative share
    min_count: int = 10  # windows with fewer items neither alert nor (for shares) feed the baseline
    min_ratio: float = 1.3  # ewma_z/volume: the value must also be this many times the baseline
    halflife: float = 48.0  # EWMA half-life in windows
    warmup: int = 24  # windows with data before a key may alert
    cooldown: int = 6  # windows after an alert in which the same rule and key stay quiet
    lateness: int = 0  # seconds a window waits after its end for items that arrive late (a slower source)
    keys: list[str] = field(default_factory=list)  # only these topics/entities (entity_negative: the watch list)
    channels: list[str] = field(default_factory=lambda: ["log"])

    def __post_init__(self) -> None:
        if self.by == "entity":  # as ingest stores them: `keys: [aapl]` must watch the items' AAPL
            self.keys = [normalise_entity(k) for k in self.keys]

    @property
    def width(self) -> int:
        return WINDOWS[self.window]

    def check(self) -> None:
        where = f"alert rule '{self.name}'"
        refuse_non_finite_keys(where, self)
        if self.kind not in KINDS:
            raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        if self.by not in ("topic", "entity", "all"):
            raise ConfigError(f"{where}: by must be topic, entity or all; got {self.by!r}")
        if self.window not in WINDOWS:
            raise ConfigError(f"{where}: window must be one of {', '.join(WINDOWS)}; got {self.window!r}")
        if self.kind == "entity_negative" and (self.by != "entity" or not self.keys):
            raise ConfigError(f"{where}: entity_negative needs by: entity and the watched entities in keys")
        if self.kind == "binomial_cusum" and not self.shift > 1:
            raise ConfigError(f"{where}: shift must be > 1 (the surge to detect, x the baseline); got {self.shift}")
        if not self.threshold > 0 or self.halflife <= 0 or self.min_count < 1 or self.cooldown < 0:
            raise ConfigError(f"{where}: threshold and halflife must be > 0, min_count >= 1, cooldown >= 0")
        if not 0 <= self.lateness <= 7 * 86400:
            raise ConfigError(f"{where}: lateness must be 0 to 604800 seconds (a week); got {self.lateness}")
        bad = [c for c in self.channels if c not in CHANNELS]
        if bad:
            raise ConfigError(f"{where}: unknown channel {bad[0]!r} (channels: {', '.join(CHANNELS)})")


def refuse_non_finite_keys(where: str, settings: Any) -> None:
    """Refuse a YAML .inf or .nan in a float setting, naming the rule (or channel) and the YAML key: the
    generic check after `check()` would name a command-line flag the user never wrote."""
    for f in fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: {f.name} must be a finite number; got {value}")


@dataclass
class WebhookChannel:
    url: str
    timeout: float = 10.0
    headers: dict = field(default_factory=dict)

    def check(self) -> None:
        refuse_non_finite_keys("channels.webhook", self)


@dataclass
class EmailChannel:
    host: str
    to: list[str]
    sender: str = "genforge-monitor@localhost"
    port: int = 25
    username: str | None = None
    password_env: str | None = None  # the password is read from this environment variable, never from YAML
    starttls: bool = False
    ssl: bool = False
    timeout: float = 10.0

    def check(self) -> None:
        refuse_non_finite_keys("channels.email", self)


@dataclass
class Channels:
    webhook: WebhookChannel | None = None
    email: EmailChannel | None = None


@dataclass
class RuleSet:
    rules: list[Rule] = field(default_factory=list)
    channels: Channels = field(default_factory=Channels)

    def check(self) -> None:
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ConfigError(f"alert rule names must be unique; got {', '.join(names)}")
        for r in self.rules:
            r.check()
            if "webhook" in r.channels and self.channels.webhook is None:
                raise ConfigError(f"alert rule '{r.name}' uses the webhook channel: set channels.webhook.url")
            if "email" in r.channels and self.channels.email is None:
                raise ConfigError(f"alert rule '{r.name}' uses the email channel: set channels.email")


# Chosen on bench_monitor's replay with gold labels (14 days, 8 topics x ~40 items an hour, 24 surges of 2x a
# 0.15 share for 6 h; 6 seeds; see docs/apps/monitor.md): binomial_cusum (shift 1.5) at 4 nats found 0.993 of
# the surges at 0.33 false alerts a day (worst seed 0.64), median delay 2 h; at 4.5 nats 0.986 at 0.20, 2.5 h;
# at 3.5 0.993 at 0.60. Before the baseline's running start (see _share_z) 4.5 nats gave 0.972 at 0.96. Dividing
# the ratio by the window's dispersion factor kept recall there (0.979 on another topic split) and cut false
# alerts from 0.42 to 0.31 a day; on series whose share wanders by sd 0.05 an hour, from 0.41 to 0.11 a day.
DEFAULT_RULES = [
    Rule("negative-surge", "binomial_cusum", threshold=4.0, shift=1.5),
    Rule("volume-spike", "volume", threshold=6.0, min_ratio=2.0),
]


def load_rules(path: Path | None) -> RuleSet:
    if path is None:
        return RuleSet(rules=list(DEFAULT_RULES))
    values = read_yaml(path)  # its errors name the file already
    try:
        rules = from_dict(RuleSet, values)
    except ConfigError as e:  # a bad rule or channel: say which file holds it
        raise ConfigError(f"{path}: {e}") from None
    if not rules.rules:
        raise ConfigError(f"{path}: no rules (give a list `rules`)")
    return rules


@dataclass
class Hit:
    index: int  # position of the window in the series
    value: float
    baseline: float
    score: float


def initial_state(rule: Rule) -> dict[str, Any]:
    """A key's detector memory before its first window: what `fold` carries from one evaluation to the next
    (the alert evaluation stores it per rule and key, so the live stream never recomputes from a cut-off)."""
    if rule.kind == "entity_negative":
        return {"mean": None, "var": 0.0}
    if rule.kind == "volume":
        return {"seen": 0, "mean": None, "var": 0.0}
    return {"seen": 0, "mean": None, "var": 0.0, "binvar": 0.0, "s": 0.0}


def definition(rule: Rule) -> str:
    """A digest of what the detector's state depends on (not the name, channels, cooldown or lateness): a rule
    whose digest changed starts its state over instead of carrying sums made under other settings."""
    settings = {k: v for k, v in asdict(rule).items() if k not in ("name", "channels", "cooldown", "lateness")}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def clipped_variance_share(clip: float) -> float:
    """E[min(X^2, clip^2)] for a standard normal X: the share of a variance that deviations clipped at `clip`
    standard deviations keep (Huber's consistency factor: 0.920 at 2, 0.995 at 3)."""
    tail = math.erfc(clip / math.sqrt(2))  # P(|X| > clip)
    return 1 - tail - clip * math.sqrt(2 / math.pi) * math.exp(-clip * clip / 2) + clip * clip * tail


class Scored(NamedTuple):
    index: int  # position of the window in the series
    share: float
    baseline: float
    z: float
    dispersion: float  # the window's variance (binomial + excess) over its binomial variance: >= 1


def _share_z(rule: Rule, state: dict[str, Any], ws: list[Window], clip: float = 2.0) -> list[Scored]:
    """The scores of every window with enough items, after the warm-up; `state` is updated.

    The baseline is an EWMA of the negative share whose updates are clipped to `clip` standard errors, so
    a surge barely moves it (it is still detected while it lasts, and it does not inflate the variance
    against which the next surge is measured), while a lasting change is followed within a few half-lives.
    The variance is fed the same clipped deviations, divided by the share of a normal variance that clipped
    deviations keep (`clipped_variance_share`): without it the clip, sized by the standard error it helps
    estimate, kept the estimate low under over-dispersion. Until the EWMA's own weight takes over (after
    1/alpha windows) the baseline, variance and binomial part are running means of the windows so far: as
    EWMAs from the first window, the baseline at the end of the warm-up was still 70% that one window and the
    variance, started at 0, under a third of its value (an alert on a topic's second day was often noise).
    Measured on 20 two-week series of 20-60 items an hour around a 0.15 share, z's sd after the warm-up:
    binomial noise 1.04 -> 0.96; a per-hour share drawn from a Beta of sd 0.03 / 0.05 / 0.08: 1.14 / 1.31 /
    1.67 -> 1.01 / 1.05 / 1.08 (the consistency factor alone: 1.11 / 1.26 / 1.61; the running start alone:
    1.06 / 1.11 / 1.15). A 6-hour doubling moves the baseline by about 0.15 standard errors (0.3 in the
    first days, while fewer windows weigh in).
    """
    alpha = 1 - 0.5 ** (1 / rule.halflife)
    keep = clipped_variance_share(clip)
    out = []
    for i, w in enumerate(ws):
        if w.n < rule.min_count:
            continue
        p = w.neg_share
        state["seen"] += 1
        mean, var, binvar, seen = state["mean"], state["var"], state["binvar"], state["seen"]
        if mean is None:
            state["mean"], state["binvar"] = p, p * (1 - p) / w.n
            continue
        excess = max(0.0, var - binvar)
        floor = 0.5 / w.n  # a baseline of exactly 0 still has some uncertainty
        # the baseline is itself an estimate from about min(seen - 1, (2 - alpha) / alpha) windows
        estimate = (binvar + excess) / min(seen - 1, (2 - alpha) / alpha)
        binomial = max(mean * (1 - mean), floor) / w.n
        se = math.sqrt(binomial + excess + estimate)
        if seen > rule.warmup:
            out.append(Scored(i, p, mean, (p - mean) / se, 1 + excess / binomial))
        diff = max(-clip * se, min(clip * se, p - mean))
        step = max(alpha, 1 / seen)
        state["mean"] = mean + step * diff
        state["var"] = (1 - step) * (var + step * diff * diff / keep)
        state["binvar"] = binvar + step * (p * (1 - p) / w.n - binvar)
    return out


def fold(rule: Rule, state: dict[str, Any], ws: list[Window]) -> list[Hit]:
    """Fold one key's next windows into its detector `state` (updated in place); the windows where `rule`
    fires (before cooldown). Folding a series in pieces gives the hits of folding it at once, so the live
    stream (a few windows at a time, state kept in the database) alerts exactly as a replay does."""
    hits = []
    if rule.kind in ("cusum", "binomial_cusum"):
        for i, p, mean, z, dispersion in _share_z(rule, state, ws):
            if rule.kind == "cusum":
                step = z - rule.k
            else:
                w = ws[i]
                # p0 kept off 0 and 1 (the ratio would be degenerate); the surge p1 at most half way from p0 to 1,
                # so p1 > p0 at every baseline and the sum drifts down (by n KL(p0 || p1)) while the share stays
                # at its baseline. (Capping p0 at 1/2 instead made a topic usually over ~55% negative alert
                # every few windows: the test was then "0.75 against 0.5" on a share above both.)
                p0 = min(max(mean, 0.5 / w.n), 1 - 0.5 / w.n)
                p1 = min(rule.shift * p0, (1 + p0) / 2)
                llr = w.negative * math.log(p1 / p0) + (w.n - w.negative) * math.log((1 - p1) / (1 - p0))
                step = llr / dispersion
            state["s"] = max(0.0, state["s"] + step)
            if state["s"] >= rule.threshold:
                hits.append(Hit(i, p, mean, state["s"]))
                state["s"] = 0.0
    elif rule.kind == "ewma_z":
        for i, p, mean, z, _ in _share_z(rule, state, ws):
            if z >= rule.threshold and p >= rule.min_ratio * mean:
                hits.append(Hit(i, p, mean, z))
    elif rule.kind == "volume":
        alpha = 1 - 0.5 ** (1 / rule.halflife)
        for i, w in enumerate(ws):
            if not state["seen"] and not w.n:
                continue  # before the key's first item: no count of 0 was ever observed there
            state["seen"] += 1
            mean, var = (float(w.n) if state["mean"] is None else state["mean"]), state["var"]
            if state["seen"] > rule.warmup and w.n >= rule.min_count:
                z = (w.n - mean) / math.sqrt(max(mean, 1.0) + max(0.0, var - mean))
                if z >= rule.threshold and w.n >= rule.min_ratio * mean:
                    hits.append(Hit(i, float(w.n), mean, z))
            if state["mean"] is not None:
                mean, state["var"] = ewma_step(mean, var, w.n, alpha)
            state["mean"] = mean
    else:  # entity_negative
        alpha = 1 - 0.5 ** (1 / rule.halflife)
        for i, w in enumerate(ws):
            if w.n < rule.min_count:
                continue
            mean, var = state["mean"], state["var"]
            if mean is None:  # the first window is the baseline, as in every EWMA here (a start at 0 took
                state["mean"] = w.neg_share  # ~2.6 half-lives to reach a steadily negative entity's share and
                continue  # alerted all the while)
            if w.neg_share >= rule.threshold and mean < rule.threshold:
                hits.append(Hit(i, w.neg_share, mean, w.neg_share))
            state["mean"], state["var"] = ewma_step(mean, var, w.neg_share, alpha)
    return hits


def detect(rule: Rule, ws: list[Window]) -> list[Hit]:
    """The windows of one key's whole series where `rule` fires (before cooldown)."""
    return fold(rule, initial_state(rule), ws)
