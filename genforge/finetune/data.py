"""Fine-tuning inputs: records from CSV/TSV/JSONL/JSON files, labels, and the hash validation split.

Files are decoded with genforge's reader (`detect_encoding`: UTF-8, else the best-guess legacy
encoding), so Latin-1 and CRLF files read like clean ones. Every bad record is a `DataError` naming
the file and line: a fine-tuning set is small and curated, and a silently dropped example is a bug
in the user's data they want to hear about.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genforge.artifacts import input_file
from genforge.config import bad_text_in
from genforge.data.readers import SkipFile, detect_encoding
from genforge.errors import DataError

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}
RECORD_KINDS = ("csv", "tsv", "jsonl", "json")
JSON_KINDS = ("jsonl", "json")  # the formats whose fields can hold lists, such as an SFT dialogue's messages


def _text_stream(path: Path) -> io.TextIOWrapper:
    try:
        encoding = detect_encoding(path)
    except SkipFile as e:
        raise DataError(f"{path} is not a text file ({e.reason})") from None
    return open(path, encoding=encoding, errors="replace", newline="")  # noqa: SIM115 - caller closes


def read_records(path: Path, *, plain_field: str | None = None,
                 kinds: tuple[str, ...] = RECORD_KINDS) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of a file of one of `kinds` (CSV/TSV/JSONL/JSON). Other files: one record per
    non-blank line, `{plain_field: line}`, when `plain_field` is given (prediction inputs); else a DataError
    naming `kinds`, so a command that reads only JSON does not suggest a CSV."""
    path = input_file(path, "data file")
    kind = FORMATS.get(path.suffix.lower())
    kind = kind if kind in kinds else None
    with _text_stream(path) as f:
        if kind in ("csv", "tsv"):
            csv.field_size_limit(2**31 - 1)
            # TSV has no quoting (as `data prepare` reads it): a text that opens with '"' would otherwise
            # swallow the rows up to the next quote into one example, silently
            reader = csv.DictReader(f, delimiter="," if kind == "csv" else "\t",
                                    quoting=csv.QUOTE_MINIMAL if kind == "csv" else csv.QUOTE_NONE)
            for row in reader:
                if None in row or any(v is None for v in row.values()):
                    raise DataError(f"{path}:{reader.line_num}: the row has a different number of fields "
                                    f"than the header")
                yield reader.line_num, row
        elif kind == "jsonl":
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno} is not valid JSON ({e.msg})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{lineno} is not a JSON object")
                yield lineno, utf8_record(f"{path}:{lineno}", record)
        elif kind == "json":
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
            if isinstance(data, list) and data and all(isinstance(r, list) and len(r) == 2 for r in data):
                data = [{"text": text, "label": label} for text, label in data]  # [[text, label], ...] (FinFE's)
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise DataError(f"{path} must hold a JSON array of objects or of [text, label] pairs")
            yield from ((i, utf8_record(f"{path}:{i}", r)) for i, r in enumerate(data, 1))
        elif plain_field is not None:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield lineno, {plain_field: line.rstrip("\r\n")}
        else:
            suffixes = [f".{k}" for k in kinds]
            choices = " or ".join(filter(None, [", ".join(suffixes[:-1]), suffixes[-1]]))
            raise DataError(f"{path}: unsupported format '{path.suffix}'; use {choices}")


def utf8_record(where: str, record: dict[str, Any]) -> dict[str, Any]:
    """`record`, once no string in it is a lone surrogate: JSON may spell one (`"\\ud800"`), and no UTF-8 text
    holds it, so it would fail far away (hashing the text for the split, or in the tokenizer)."""
    found = bad_text_in(record)
    if found:
        raise DataError(f"{where}: field {found[0].split('.')[0]!r} is not UTF-8 text ({found[1]})")
    return record


def get_field(path: Path, lineno: int, record: dict[str, Any], name: str) -> Any:
    if name not in record:
        raise DataError(f"{path}:{lineno}: no field '{name}' (it has: {', '.join(map(str, record)) or 'none'})")
    return record[name]


def parse_labels(value: Any, multi_label: bool, sep: str) -> list[str]:
    """A record's label(s) as strings: one label, or (multi-label) a JSON/Python list or a `sep`-joined string."""
    if multi_label:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    value = text.strip("[]").replace("'", "").replace('"', "").split(",")
            else:
                value = text.split(sep) if text else []
        items = value if isinstance(value, list) else [value]
        return sorted({str(v).strip() for v in items if str(v).strip()})
    if isinstance(value, list | dict) or value is None or str(value).strip() == "":
        raise ValueError("expected one label (use --multi-label for several)")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return [str(value).strip()]


def read_labelled(path: Path, text_field: str, label_field: str, multi_label: bool = False,
                  sep: str = ",") -> list[tuple[str, list[str]]]:
    """(text, labels) pairs of a file; a missing field, empty text or bad label is an error naming the line."""
    examples = []
    for lineno, record in read_records(path):
        text = get_field(path, lineno, record, text_field)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}:{lineno}: '{text_field}' must be a non-empty string")
        try:
            labels = parse_labels(get_field(path, lineno, record, label_field), multi_label, sep)
        except ValueError as e:
            raise DataError(f"{path}:{lineno}: bad '{label_field}' value: {e}") from None
        examples.append((text, labels))
    if not examples:
        raise DataError(f"{path} holds no examples")
    return examples


def hash_bucket(text: str, buckets: int = 10) -> int:
    """The shared split convention: sha256 of the stripped text mod 10 (0-7 train, 8 validation, 9 test)."""
    return int(hashlib.sha256(text.strip().encode("utf-8")).hexdigest(), 16) % buckets


def hash_split(items: list, text_of: Any = lambda x: x[0], val_bucket: int = 8,
               require_both: bool = True) -> tuple[list, list]:
    """(train, validation): validation is hash bucket `val_bucket` of 10, everything else trains. With
    `require_both` an empty side is an error; without, a small set may yield no validation items (a silo's
    share of a federation's validation set)."""
    train, val = [], []
    for item in items:
        (val if hash_bucket(text_of(item)) == val_bucket else train).append(item)
    if require_both and (not train or not val):
        raise DataError(f"the hash split of {len(items)} examples left an empty "
                        f"{'training' if not train else 'validation'} set: give --val-data or more data")
    return train, val


def label_set(examples: list[tuple[str, list[str]]]) -> list[str]:
    """Sorted labels, numerically when all labels are integers ("2" after "1", not after "10")."""
    labels = {lab for _, labs in examples for lab in labs}
    if all(lab.lstrip("-").isdigit() for lab in labels):
        return sorted(labels, key=int)
    return sorted(labels)
