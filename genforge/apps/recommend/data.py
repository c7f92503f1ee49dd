"""Loading a catalogue and an interaction log, and the per-user hash split.

Ids are strings; an all-digit id loses its leading zeros ("0000008" == "8"), because catalogues and
event logs exported by different tools disagree on zero padding (movietweetings does). Text is
HTML-unescaped (MyAnimeList names carry `&#039;`). `.dat`/`.txt` files are tab- or comma-separated,
whichever the header line uses.
"""

from __future__ import annotations

import csv
import hashlib
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genforge.artifacts import input_file
from genforge.data.readers import SkipFile, detect_encoding
from genforge.errors import DataError
from genforge.finetune.data import get_field, read_records

HOLDOUT_FOLDS = 5
GENRE_SPLIT = re.compile(r"[,|]")


@dataclass
class Items:
    ids: list[str]
    titles: list[str]
    texts: list[str]  # the text that is embedded and shown to the interest scorer
    genres: list[list[str]]

    def index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.ids)}


@dataclass
class Interactions:
    users: list[str]
    items: list[str]
    ratings: list[float | None]
    times: list[float | None]
    dropped: int = 0  # rows naming an item the catalogue lacks (read_interactions)


def norm_id(value: Any) -> str:
    text = str(value).strip()
    return str(int(text)) if text.isdigit() else text


def rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, record) of CSV/TSV/JSONL/JSON files, and of `.dat`/`.txt` tables with a header line."""
    path = Path(path)
    if path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".ndjson", ".json"):
        yield from read_records(path)
        return
    input_file(path, "data file")
    try:
        encoding = detect_encoding(path)
    except SkipFile as e:
        raise DataError(f"{path} is not a text file ({e.reason})") from None
    with open(path, encoding=encoding, errors="replace", newline="") as f:
        header = f.readline()
        f.seek(0)
        reader = csv.DictReader(f, delimiter="\t" if "\t" in header else ",")
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise DataError(f"{path}:{reader.line_num}: the row has a different number of fields than the header")
            yield reader.line_num, row


def clean(text: Any) -> str:
    return " ".join(html.unescape(str(text or "")).split())


def read_items(path: Path, id_field: str, text_fields: list[str], title_field: str | None = None,
               genre_field: str | None = None) -> Items:
    ids, titles, texts, genres, seen = [], [], [], [], set()
    for lineno, record in rows(path):
        item = norm_id(get_field(path, lineno, record, id_field))
        if not item:
            raise DataError(f"{path}:{lineno}: empty '{id_field}'")
        if item in seen:
            continue  # a catalogue listing an item twice: the first row describes it
        parts = [clean(get_field(path, lineno, record, name)) for name in text_fields]
        text = ". ".join(p for p in parts if p)
        if not text:
            raise DataError(f"{path}:{lineno}: item {item} has no text in {', '.join(text_fields)}")
        seen.add(item)
        ids.append(item)
        titles.append(clean(get_field(path, lineno, record, title_field)) if title_field else parts[0] or text)
        texts.append(text)
        raw = clean(get_field(path, lineno, record, genre_field)) if genre_field else ""
        genres.append([g.strip().lower() for g in GENRE_SPLIT.split(raw) if g.strip()])
    if not ids:
        raise DataError(f"{path} holds no items")
    return Items(ids, titles, texts, genres)


def _number(path: Path, lineno: int, name: str, value: Any) -> float | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}:{lineno}: '{name}' must be a number; got {value!r}") from None


def read_interactions(paths: list[Path], user_field: str, item_field: str, rating_field: str | None = None,
                      time_field: str | None = None, known_items: set[str] | None = None) -> Interactions:
    """Interactions of one or more files; a (user, item) pair seen again takes the later row's values.
    Items missing from the catalogue are dropped (counted in the returned `dropped`)."""
    pairs: dict[tuple[str, str], tuple[float | None, float | None]] = {}
    dropped = 0
    for path in paths:
        for lineno, record in rows(path):
            user = norm_id(get_field(path, lineno, record, user_field))
            item = norm_id(get_field(path, lineno, record, item_field))
            if not user or not item:
                raise DataError(f"{path}:{lineno}: empty user or item")
            if known_items is not None and item not in known_items:
                dropped += 1
                continue
            rating = _number(path, lineno, rating_field, get_field(path, lineno, record, rating_field)) \
                if rating_field else None
            when = _number(path, lineno, time_field, get_field(path, lineno, record, time_field)) \
                if time_field else None
            pairs[(user, item)] = (rating, when)
    if not pairs:
        raise DataError(f"no interaction of {', '.join(map(str, paths))} names an item of the catalogue "
                        f"(check --item-id-field/--item-field)")
    keys = list(pairs)
    return Interactions([u for u, _ in keys], [i for _, i in keys], [pairs[k][0] for k in keys],
                        [pairs[k][1] for k in keys], dropped)


def is_heldout(user: str, item: str) -> bool:
    """The shared evaluation fold: sha256("user:item") % 5 == 0 holds out ~20% of each user's items."""
    return int(hashlib.sha256(f"{user}:{item}".encode()).hexdigest(), 16) % HOLDOUT_FOLDS == 0


def split(data: Interactions, salt: str = "") -> tuple[Interactions, Interactions]:
    """(kept, held out) by `is_heldout` on "user:item" (+ a salt for a second, independent fold)."""
    keep, out = Interactions([], [], [], []), Interactions([], [], [], [])
    for u, i, r, t in zip(data.users, data.items, data.ratings, data.times, strict=True):
        side = out if is_heldout(u + salt, i) else keep
        side.users.append(u)
        side.items.append(i)
        side.ratings.append(r)
        side.times.append(t)
    return keep, out


def merged(a: Interactions, b: Interactions) -> Interactions:
    """Two folds `split` cut apart as one set of interactions again."""
    return Interactions(a.users + b.users, a.items + b.items, a.ratings + b.ratings, a.times + b.times)
