"""Readers: input paths -> a stream of raw document strings, whatever the file format and encoding.

Formats, by extension: .jsonl/.ndjson, .json (an array of records), .csv, .tsv and .parquet hold one
document per record (`text_field`); .html/.htm give their visible text; anything else is plain text.
Plain text and HTML are cut into documents by `split_by`: "paragraph" (at blank lines), "line", "file".

Everything streams: text files line by line, CSV/JSONL record by record, Parquet in row batches, so
memory is bounded by the largest single document, not by the file. The exceptions are HTML and .json
files, which are parsed whole (they are pages and small exports, not corpora).

Encodings: a file is UTF-8 if all of it decodes as UTF-8 (a cheap C-speed pass; a BOM decides first).
Otherwise charset-normalizer guesses from the first MiB. Windows-1252 (Latin-1 plus curly quotes,
dashes and €) wins whenever its reading is about as clean as the best guess: on short text the guesser's
language-fit score is noise, and rare DOS/Mac/Baltic code pages would otherwise win ("café" as cp775's
"cafķ"). Among other equally good guesses the common encodings win (gb18030 over gbk), which is what
real GBK files need.
A file with NUL bytes (and no UTF-16/32 BOM) is binary and skipped; one no encoding fits is counted
as a decode error. Neither stops the run; a text field missing from a file's records does (DataError).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from genforge.errors import DataError

SNIFF_BYTES = 1 << 20
# Characters read between progress reports: one report per document cost as much as parsing a short record.
_REPORT_EVERY = 1 << 16
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# When charset-normalizer scores several encodings the same, the first of these that fits wins.
_PREFERRED = ("utf_8", "gb18030", "big5", "shift_jis", "euc_kr", "cp1251", "latin_1")
_SUPERSET = {"ascii": "utf_8", "gb2312": "gb18030", "gbk": "gb18030"}
# How much messier (charset-normalizer's chaos, 0-1) cp1252's reading may be than the best guess and still win.
_CP1252_CHAOS_MARGIN = 0.1
_RECORD_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
                   ".parquet": "parquet"}
_HTML = {".html", ".htm", ".xhtml"}
_BLOCK_TAGS = ["address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "figcaption", "figure",
               "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol",
               "p", "pre", "section", "table", "tr", "ul", "caption"]
_WHITESPACE = re.compile(r"[ \t\n\r\f]+")  # HTML whitespace; &nbsp; is not collapsed

Progress = Callable[[int], None]


class SkipFile(Exception):
    """A file that cannot be read as text; `reason` ("binary" or "decode_error") is counted, not fatal."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def genforge_output(folder: Path) -> bool:
    """Whether `folder` holds what a genforge command wrote (its manifest, or an unfinished `data prepare`): an
    earlier run's output kept inside the corpus, whose JSON, token and weight files are no text to train on. A
    web site's own manifest.json (no "genforge_version") is corpus."""
    if (folder / "prepare.partial.json").is_file():
        return True
    try:
        manifest = json.loads((folder / "manifest.json").read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "genforge_version" in manifest


def find_files(inputs: Iterable[Path], exclude: Path | None = None) -> list[Path]:
    """Every file under `inputs` in a stable order, each once (folders recursively; hidden names, the folder
    `exclude` (normally the output folder) and other genforge outputs below an input folder skipped)."""
    skip = Path(exclude).resolve() if exclude is not None else None
    found: dict[Path, Path] = {}  # resolved -> as given: a file named twice is read once
    for root in map(Path, inputs):
        if not root.exists():
            raise DataError(f"input not found: {root}")
        if root.is_file():
            found.setdefault(root.resolve(), root)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (here / d).resolve() != skip
                                 and not genforge_output(here / d))
            for name in sorted(filenames):
                if not name.startswith("."):
                    found.setdefault((here / name).resolve(), here / name)
    return list(found.values())


def _is_utf8(path: Path) -> bool:
    """Whether the file is UTF-8, allowing a stray invalid byte in text that is otherwise clearly UTF-8 (at least
    100 well-formed multi-byte characters per bad byte: a scraped file with one damaged character). Text in a
    legacy single-byte encoding (Latin-1's é before an ASCII letter) has no well-formed multi-byte characters,
    so it still goes to the guesser."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    bad = good = 0
    with open(path, "rb") as f:
        while block := f.read(SNIFF_BYTES):
            text = decoder.decode(block)
            bad += text.count("\ufffd") - block.count(b"\xef\xbf\xbd")  # a real U+FFFD is no error
            good += len(text) - len(text.encode("ascii", "ignore"))
    text = decoder.decode(b"", final=True)
    bad += text.count("\ufffd")
    return bad <= 0 or good - bad >= 100 * bad


def detect_encoding(path: Path) -> str:
    """The codec to read a text file with; raises SkipFile for binary or undecodable files."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding
    if b"\x00" in head[:8192]:
        raise SkipFile("binary")
    if _is_utf8(path):
        return "utf_8"
    from charset_normalizer import from_bytes

    if len(head) == SNIFF_BYTES and b"\n" in head:  # a sample cut inside a multi-byte character fits no codec
        head = head[:head.rindex(b"\n") + 1]
    results = from_bytes(head)
    best = results.best()
    if best is None:
        raise SkipFile("decode_error")
    # Coherence (letter frequencies) decides between equally clean readings, and on a short text it is noise:
    # "café naïve" fits Baltic cp775's "cafķ na’ve" better. Windows-1252, the legacy encoding of most Western
    # text, is the safer bet then; Cyrillic, Greek or CJK bytes read as cp1252 are a mess of accented letters,
    # which charset-normalizer leaves out of its results, so their guesses stand.
    western = next((m for m in results if "cp1252" in m.could_be_from_charset), None)
    if western is not None and western.chaos <= best.chaos + _CP1252_CHAOS_MARGIN:
        return "cp1252"
    tied = {_SUPERSET.get(e, e) for m in results if (m.chaos, m.coherence) == (best.chaos, best.coherence)
            for e in m.could_be_from_charset}
    return next((e for e in _PREFERRED if e in tied), _SUPERSET.get(best.encoding, best.encoding))


def _open_text(path: Path, newline: str | None = None) -> tuple[IO[bytes], IO[str]]:
    """(raw byte stream, decoded text stream) of a text file; the raw one tells how far reading got."""
    encoding = detect_encoding(path)
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller through the text wrapper
    # A stray byte becomes U+FFFD rather than ending the file: UTF-8 may hold one (`_is_utf8`), a guessed
    # encoding (from the first MB) may meet one further on.
    return raw, io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline=newline)


def _as_text(value: Any) -> str | None:
    """A record's field as text: lists (e.g. a poem's lines) are joined by newlines; null is empty; None for an
    object (a nested record), whose Python repr "{'en': ...}" would otherwise go into the corpus as text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return None
    if isinstance(value, list | tuple):
        parts = [_as_text(v) for v in value]
        return None if None in parts else "\n".join(parts)
    return str(value)


def _texts(values: Iterable[Any], skipped: Counter) -> Iterator[str]:
    """The fields' texts; a field holding an object counts as a bad record."""
    for value in values:
        text = _as_text(value)
        if text is None:
            skipped["bad_record"] += 1
        else:
            yield text


def _missing_field(path: Path, field: str, have: Iterable[str]) -> DataError:
    fields = ", ".join(map(str, have)) or "none"
    return DataError(f"{path}: no field '{field}' (it has: {fields}); choose one with --text-field")


def split_text(lines: Iterable[str], split_by: str) -> Iterator[str]:
    """Cut a stream of lines (with their newlines) into documents: per paragraph, line or whole file."""
    if split_by == "file":
        yield "".join(lines)
    elif split_by == "line":
        yield from (line for line in lines if line.strip())
    else:
        paragraph: list[str] = []
        for line in lines:
            if line.strip():
                paragraph.append(line)
            elif paragraph:
                yield "".join(paragraph)
                paragraph = []
        if paragraph:
            yield "".join(paragraph)


_INDENT = re.compile(r"(?m)^[ \t]+")
_HOLD_INDENT = str.maketrans(" \t", "\x00\x01")  # control characters, which HTML text does not hold
_RELEASE_INDENT = str.maketrans("\x00\x01", " \t")


def html_text(markup: str) -> str:
    """The visible text of an HTML page: no tags, scripts or styles; entities decoded; blocks on their own lines."""
    from bs4 import BeautifulSoup, NavigableString

    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head", "svg", "iframe", "object"]):
        tag.decompose()
    for s in soup.find_all(string=True):  # collapse source whitespace as a browser does (except in <pre>)
        if type(s) is NavigableString and s.find_parent("pre") is None:
            s.replace_with(_WHITESPACE.sub(" ", s))
        elif type(s) is NavigableString:  # a <pre> line's indentation means something (code): kept through
            s.replace_with(_INDENT.sub(lambda m: m.group().translate(_HOLD_INDENT), s))  # the strip below
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for cell in soup.find_all(["td", "th"]):
        cell.insert_after("\t")
    for tag in soup.find_all(_BLOCK_TAGS):
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")
    lines = (line.strip() for line in soup.get_text().split("\n"))
    return "\n".join(lines).translate(_RELEASE_INDENT)


def _read_text(path: Path, split_by: str, progress: Progress) -> Iterator[str]:
    raw, text = _open_text(path)
    done = 0
    with text:
        pending = 0
        for doc in split_text(text, split_by):
            yield doc
            if (pending := pending + len(doc)) >= _REPORT_EVERY:
                progress(raw.tell() - done)
                done, pending = raw.tell(), 0


def _read_html(path: Path, split_by: str) -> Iterator[str]:
    _, text = _open_text(path)
    with text:
        markup = text.read()
    yield from split_text(html_text(markup).splitlines(keepends=True), split_by)


def _read_jsonl(path: Path, field: str, progress: Progress, skipped: Counter) -> Iterator[str]:
    raw, text = _open_text(path)
    first, done, pending = True, 0, 0
    with text:
        for line in text:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                skipped["bad_record"] += 1
                continue
            if not isinstance(record, dict) or field not in record:
                if first:
                    raise _missing_field(path, field, record if isinstance(record, dict) else ())
                skipped["bad_record"] += 1
                continue
            first = False
            yield from _texts([record[field]], skipped)
            if (pending := pending + len(line)) >= _REPORT_EVERY:
                progress(raw.tell() - done)
                done, pending = raw.tell(), 0


def _read_json(path: Path, field: str, skipped: Counter) -> Iterator[str]:
    _, text = _open_text(path)
    with text:
        try:
            data = json.load(text)
        except json.JSONDecodeError:
            raise SkipFile("decode_error") from None
    records = data if isinstance(data, list) else [data]
    for i, record in enumerate(records):
        if isinstance(record, str):
            yield record
        elif isinstance(record, dict) and field in record:
            yield from _texts([record[field]], skipped)
        elif i == 0:
            raise _missing_field(path, field, record if isinstance(record, dict) else ())
        else:
            skipped["bad_record"] += 1


def _read_csv(path: Path, field: str, delimiter: str, progress: Progress, skipped: Counter) -> Iterator[str]:
    csv.field_size_limit(2**31 - 1)  # long documents are fields too; the default 128 KiB limit is for safety
    raw, text = _open_text(path, newline="")
    done = pending = 0
    with text:
        # TSV has no quoting: a field starting with '"' (a quoted review) would swallow the rows after it
        reader = csv.DictReader(text, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else
                                csv.QUOTE_MINIMAL)
        if reader.fieldnames is None:
            return
        if field not in reader.fieldnames:
            raise _missing_field(path, field, reader.fieldnames)
        for row in reader:
            value = row.get(field)
            if value is None:  # a short row
                skipped["bad_record"] += 1
                continue
            yield value
            if (pending := pending + len(value)) >= _REPORT_EVERY:
                progress(raw.tell() - done)
                done, pending = raw.tell(), 0


def _read_parquet(path: Path, field: str, progress: Progress, skipped: Counter) -> Iterator[str]:
    import pyarrow.parquet as pq
    from pyarrow import ArrowException

    try:
        pf = pq.ParquetFile(path)
    except ArrowException:
        raise SkipFile("decode_error") from None
    names = pf.schema_arrow.names
    if field not in names:
        raise _missing_field(path, field, names)
    size, rows = path.stat().st_size, max(pf.metadata.num_rows, 1)
    for batch in pf.iter_batches(batch_size=4096, columns=[field]):
        yield from _texts(batch.column(0).to_pylist(), skipped)
        progress(size * batch.num_rows // rows)


def read_documents(path: Path, *, split_by: str = "paragraph", text_field: str = "text",
                   progress: Progress | None = None, skipped: Counter | None = None) -> Iterator[str]:
    """The raw documents of one file. Raises SkipFile (binary/undecodable) or DataError (missing field).

    `progress` receives the bytes read since its last call; `skipped` counts malformed records.
    """
    progress = progress or (lambda n: None)
    skipped = skipped if skipped is not None else Counter()
    kind = _RECORD_FORMATS.get(path.suffix.lower())
    if kind == "parquet":
        return _read_parquet(path, text_field, progress, skipped)
    if kind == "jsonl":
        return _read_jsonl(path, text_field, progress, skipped)
    if kind == "json":
        return _read_json(path, text_field, skipped)
    if kind in ("csv", "tsv"):
        return _read_csv(path, text_field, "," if kind == "csv" else "\t", progress, skipped)
    if path.suffix.lower() in _HTML:
        return _read_html(path, split_by)
    return _read_text(path, split_by, progress)


def iter_documents(files: list[Path], *, split_by: str = "paragraph", text_field: str = "text",
                   progress: Progress | None = None, skipped: Counter | None = None) -> Iterator[tuple[int, str]]:
    """(file index, raw document) over all files; unreadable files are counted in `skipped`, not raised.

    A file that turns out to be unreadable part-way keeps the documents read before the failure.
    """
    skipped = skipped if skipped is not None else Counter()
    for i, path in enumerate(files):
        reported = 0

        def report(n: int) -> None:
            nonlocal reported
            reported += n
            if progress:
                progress(n)

        try:
            for doc in read_documents(path, split_by=split_by, text_field=text_field, progress=report,
                                      skipped=skipped):
                yield i, doc
        except SkipFile as e:
            skipped[e.reason] += 1
        except (UnicodeDecodeError, csv.Error):
            skipped["decode_error"] += 1
        if progress and (rest := path.stat().st_size - reported) > 0:
            progress(rest)
