"""Stream sources: a JSONL file followed like `tail -f`, and a folder whose new files are picked up.

Both resume from the offsets stored with the items (see ingest.py), so a restart re-reads nothing and
skips nothing. A JSONL file is read to its last complete line (a writer mid-line is waited for); a file
that shrank was truncated or rotated and is read again from the start. `--once` takes the files as they
are, so there an unterminated last line is read as well.

The folder is polled rather than watched with inotify (watchdog): polling needs no dependency, works on
network and container file systems where inotify events never arrive, and the startup scan that finds
files written while the monitor was down is the same code as every poll. A news stream does not need
sub-second pickup, and one `scandir` per poll is cheap. In the folder, `*.jsonl` files are followed
like the JSONL source (items may be appended), `*.json` files (one item or a list) and `*.txt` files
(one item, timed by the file's mtime) are read once when they have not changed for `settle` seconds;
names starting with "." or ending in .tmp/.part are being written and are left alone.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from genforge.apps.monitor.ingest import Item, parse_item, read_offset
from genforge.apps.monitor.tables import MonitorOffset
from genforge.errors import DataError

log = logging.getLogger("genforge.monitor")
PARTIAL = (".tmp", ".part", ".partial", ".crdownload")


def read_lines(path: Path, position: int, limit: int, source: str,
               final: bool = False) -> tuple[list[Item], int]:
    """Items of the complete lines of a JSONL file from byte `position` (at most `limit`), and the new position.
    A malformed line is logged and skipped: one bad line must not stop a stream. With `final` (--once takes
    the file as it is now) a last line without a newline is complete too, not silently left unread."""
    size = path.stat().st_size
    if size < position:
        log.warning("file shrank: reading %s again from the start", path, extra={"path": str(path)})
        position = 0
    items = []
    with open(path, "rb") as f:
        f.seek(position)
        while len(items) < limit:
            line = f.readline()
            if not line or not (line.endswith(b"\n") or final):
                break  # end of file, or a line still being written
            lineno_hint = f"{path}@{position}"
            position += len(line)
            if not line.strip():
                continue
            try:
                items.append(parse_item(json.loads(line.decode("utf-8", errors="replace")), source,
                                        int(time.time()), lineno_hint))
            except (json.JSONDecodeError, DataError) as e:
                # the place and the reason in the message itself: `--once` logs without the JSON formatter
                log.warning("skipped a bad line at %s: %s", lineno_hint, e,
                            extra={"where": lineno_hint, "error": str(e)})
    return items, position


@dataclass
class JsonlTail:
    path: Path
    final: bool = False  # --once: an unterminated last line is read (see read_lines)

    @property
    def stream(self) -> str:
        return f"jsonl:{self.path.resolve()}"

    def read(self, engine: Engine, limit: int) -> tuple[list[Item], dict[str, int]]:
        if not self.path.is_file():
            return [], {}
        old = read_offset(engine, self.stream)
        items, position = read_lines(self.path, old, limit, self.path.stem, self.final)
        return items, ({self.stream: position} if position != old else {})


@dataclass
class FolderWatch:
    path: Path
    settle: float = 1.0  # seconds a .json/.txt file must be unchanged before it is read
    final: bool = False  # --once: an unterminated last line of a .jsonl file is read (see read_lines)

    def _done(self, engine: Engine) -> dict[str, int]:
        prefix = f"file:{self.path.resolve()}{os.sep}"
        with Session(engine) as session:
            rows = session.execute(select(MonitorOffset.stream, MonitorOffset.position).where(
                MonitorOffset.stream.startswith(prefix, autoescape=True)))
            return {s: p for s, p in rows}

    def read(self, engine: Engine, limit: int) -> tuple[list[Item], dict[str, int]]:
        """Items of the next files (sorted by mtime, then name), up to about `limit`, and their offsets."""
        if not self.path.is_dir():
            raise DataError(f"folder source {self.path} does not exist")
        done = self._done(engine)
        files = sorted((e for e in os.scandir(self.path) if e.is_file() and not e.name.startswith(".")
                        and not e.name.endswith(PARTIAL)), key=lambda e: (e.stat().st_mtime, e.name))
        items: list[Item] = []
        offsets: dict[str, int] = {}
        now = time.time()
        for entry in files:
            if len(items) >= limit:
                break
            path = Path(entry.path).resolve()
            stream, stat = f"file:{path}", entry.stat()
            position = done.get(stream, 0)
            suffix = path.suffix.lower()
            if suffix == ".jsonl":
                if stat.st_size != position:
                    new, moved = read_lines(path, position, limit - len(items), self.path.name, self.final)
                    items += new
                    if moved != position:
                        offsets[stream] = moved
                continue
            if suffix not in (".json", ".txt") or stream in done or now - stat.st_mtime < self.settle:
                continue
            items += self._whole_file(path, int(stat.st_mtime))
            offsets[stream] = stat.st_size
        return items, offsets

    def _whole_file(self, path: Path, mtime: int) -> list[Item]:
        text = path.read_bytes().decode("utf-8", errors="replace")
        try:
            if path.suffix.lower() == ".txt":
                return [parse_item({"text": text.strip()}, self.path.name, mtime, str(path))] if text.strip() else []
            data = json.loads(text)
            records = data if isinstance(data, list) else [data]
            return [parse_item(r, self.path.name, mtime, f"{path}[{i}]") for i, r in enumerate(records)]
        except (json.JSONDecodeError, DataError) as e:
            log.warning("skipped a bad file %s: %s", path, e, extra={"path": str(path), "error": str(e)})
            return []


def open_sources(specs: list[str], settle: float = 1.0, once: bool = False) -> list[JsonlTail | FolderWatch]:
    """The file sources of `--source` specs (`http` is served by the web app, not polled).

    A JSONL file is followed like `tail -f`, so a running monitor may wait for one that does not exist yet
    (a warning says so); `once` reads what is there now, so there a missing file is an error."""
    out: list[JsonlTail | FolderWatch] = []
    for spec in specs:
        kind, _, path = spec.partition(":")
        if kind == "jsonl":
            file = Path(path).expanduser()
            if file.is_dir():
                raise DataError(f"--source {spec}: {file} is a folder; follow it with --source folder:{path}")
            if not file.exists():
                if once:
                    raise DataError(f"--source {spec}: {file} does not exist (--once reads what the file holds now)")
                log.warning("waiting for the JSONL source %s to appear", file, extra={"path": str(file)})
            out.append(JsonlTail(file, final=once))
        elif kind == "folder":
            folder = Path(path).expanduser()
            if not folder.is_dir():
                raise DataError(f"--source {spec}: {folder} is not a folder")
            out.append(FolderWatch(folder, settle, final=once))
    return out
