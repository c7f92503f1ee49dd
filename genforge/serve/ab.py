"""A/B testing: traffic weights of an experiment, sticky assignment of users to variants, promotion.

An experiment is the public name of `--model`: a request for that name is answered by one of its arms,
the --model folder and every LM `--variant NAME=DIR:WEIGHT` given with a weight. A variant's weight is its
share of traffic; the --model folder gets what the variants leave of 1 (or weight 1, all weights being
relative, when theirs add up to 1 or more). A request naming an arm directly is answered by that arm.

Assignment hashes (experiment, user) to a point in [0, 1) and walks the arms' cumulative shares, so a
user keeps their variant across requests, restarts and replicas for as long as the weights stay the same;
a request without `user` is assigned at random. The weights in force are the newest row of the
`ab_weights` table, shared by every replica on the database: a server writes its configured weights on
start only when the experiment is new or its arms changed, so a restart keeps a promotion, and
`genforge ab promote` appends a row that every replica reads on its next request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from genforge.errors import ConfigError
from genforge.serve.db import AbWeights

log = logging.getLogger("genforge.serve")


def arm_weights(variants: list[Any], kinds: dict[str, str]) -> dict[str, float] | None:
    """{arm: weight} of the experiment of the first variant (--model), or None when it has no other arm."""
    main, *others = variants
    arms = {v.name: v.weight for v in others if v.weighted and kinds.get(v.name) == kinds.get(main.name) == "lm"}
    if not arms:
        return None
    total = sum(arms.values())
    return {main.name: 1.0 - total if total < 1 else 1.0, **arms}


def shares(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items()}


def _split(weights: dict[str, float]) -> str:
    return ", ".join(f"{arm} {share:.0%}" for arm, share in shares(weights).items())


def bucket(experiment: str, user: str) -> float:
    """A stable point in [0, 1) for (experiment, user): the first 8 bytes of a SHA-256."""
    digest = hashlib.sha256(f"{experiment}\0{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(experiment: str, user: str | None, weights: dict[str, float]) -> str:
    point = bucket(experiment, user) if user else random.random()
    total = 0.0
    for arm, share in shares(weights).items():
        total += share
        if point < total:
            return arm
    return next(reversed(weights))  # rounding: the point fell past the last cumulative share


def current(engine: Engine, experiment: str) -> tuple[int, dict[str, float]] | None:
    """(row id, weights) in force for `experiment`, or None if it has none yet."""
    with Session(engine) as session:
        row = session.scalar(select(AbWeights).where(AbWeights.experiment == experiment)
                             .order_by(AbWeights.id.desc()).limit(1))
        return (row.id, json.loads(row.weights)) if row else None


def record(engine: Engine, experiment: str, weights: dict[str, float], reason: str) -> int:
    with Session(engine) as session:
        row = AbWeights(experiment=experiment, weights=json.dumps(weights), reason=reason)
        session.add(row)
        session.commit()
        return row.id


@dataclass
class Experiment:
    """The A/B test of one public model name on one server."""

    name: str
    configured: dict[str, float]
    engine: Engine

    def start(self) -> None:
        """Write the configured weights unless the database already has weights for these same arms."""
        now = current(self.engine, self.name)
        if now is None or set(now[1]) != set(self.configured):
            record(self.engine, self.name, self.configured, "configured")
        elif any(abs(shares(now[1])[arm] - share) > 1e-9 for arm, share in shares(self.configured).items()):
            log.warning(f"A/B experiment {self.name!r} keeps the weights in the database ({_split(now[1])}), not "
                        f"the configured ones ({_split(self.configured)}): a restart keeps a promotion; change "
                        "them with `genforge ab promote VARIANT --share S`",
                        extra={"model": self.name, "weights": now[1]})

    def in_force(self) -> tuple[int | None, dict[str, float]]:
        """(id, weights) of the newest weights row, restricted to this server's arms; the configured weights
        (id None) if the database has none (a table emptied under a running server)."""
        now = current(self.engine, self.name)
        weights_id, weights = now if now else (None, self.configured)
        return weights_id, {arm: w for arm, w in weights.items() if arm in self.configured} or self.configured

    def choose(self, user: str | None) -> tuple[str, int | None]:
        """(the arm that answers `user`, the id of the weights used)."""
        weights_id, weights = self.in_force()
        return assign(self.name, user, weights), weights_id


def experiments(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(session.scalars(select(AbWeights.experiment).distinct().order_by(AbWeights.experiment)))


def pick_experiment(engine: Engine, name: str | None) -> str:
    known = experiments(engine)
    if name is not None:
        if name not in known:
            raise ConfigError(f"no A/B experiment named {name!r} in the database (known: {', '.join(known) or 'none'})")
        return name
    if len(known) != 1:
        raise ConfigError("the database holds " + (f"several experiments ({', '.join(known)}): pick one with --model"
                                                   if known else "no A/B experiment: serve a --variant NAME=DIR:WEIGHT"))
    return known[0]


def promote(engine: Engine, experiment: str | None, variant: str, share: float = 1.0) -> dict[str, float]:
    """Give `variant` `share` of the traffic (the other arms split the rest by their weights); returns the
    new weights, which every replica on the database uses from its next request."""
    experiment = pick_experiment(engine, experiment)
    _, weights = current(engine, experiment)
    if variant not in weights:
        raise ConfigError(f"experiment {experiment!r} has no variant {variant!r} (variants: {', '.join(weights)})")
    others = {arm: w for arm, w in weights.items() if arm != variant}
    total = sum(others.values())
    new = {arm: (share if arm == variant else
                 (1 - share) * (w / total if total > 0 else 1 / len(others))) for arm, w in weights.items()}
    record(engine, experiment, new, f"promote {variant} to {share:g}")
    return new


def run_promote(cfg: Any) -> dict[str, float]:
    """`genforge ab promote NAME`."""
    import typer

    from genforge.serve.config import default_db_url
    from genforge.serve.db import connect

    weights = promote(connect(cfg.db or default_db_url(), create=False), cfg.model, cfg.variant, cfg.share)
    total = sum(weights.values())
    typer.echo("traffic from the next request on: " + ", ".join(f"{k} {w / total:.0%}" for k, w in weights.items()))
    return weights
