"""`genforge app recommend recommend`: top-k for a user, liked items or a text, printed with explanations."""

from __future__ import annotations

from typing import Any

from genforge.apps.recommend.config import RecommendConfig
from genforge.apps.recommend.recommender import Recommender, load


def query_of(model: Recommender, user: str | None, items: list[str], text: str | None) -> Any:
    if user is not None:
        return model.query_for_user(user)
    if items:
        return model.query_for_items(items)
    return model.query_for_text(text or "")


def recommend(cfg: RecommendConfig) -> list[dict[str, Any]]:
    from rich.console import Console
    from rich.table import Table

    model = load(cfg.model, scorer=cfg.scorer)
    rows = model.recommend(query_of(model, cfg.user, cfg.items, cfg.like), cfg.k, genres=cfg.genre)
    table = Table(title=f"top {cfg.k} for " + (f"user {cfg.user}" if cfg.user else
                                               f"items {', '.join(cfg.items)}" if cfg.items else repr(cfg.like)))
    for col in ("#", "item", "title", "score", "why"):
        table.add_column(col)
    for n, row in enumerate(rows, 1):
        table.add_row(str(n), row["item"], row["title"], f"{row['score']:.3f}", row["explanation"])
    Console().print(table)
    return rows
