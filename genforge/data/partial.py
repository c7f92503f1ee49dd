"""The resumable output of `data prepare`: partial files, the record of how far they go, and the dedup index
they imply.

A run appends to train/val.partial.jsonl and, per kept document, its exact key and MinHash signature to
dedup.partial.bin; a checkpoint syncs them and records in prepare.partial.json their sizes, how many input
documents they cover and the counts so far. `--resume` cuts the files back to that record (dropping what a
kill left after it), refills the index from the signatures (no document is cleaned or hashed again) and goes
on after the covered documents. Only when all is done are the partial files renamed to train/val.jsonl, so
later stages never read half a run.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from genforge.artifacts import check_same_settings, read_json, reading, write_json
from genforge.data.dedup import DedupIndex, chunk_band_keys
from genforge.errors import ArtifactError

PROGRESS = "prepare.partial.json"  # written first: what the run covered so far, and what it depends on
FILES = {"train": "train.partial.jsonl", "val": "val.partial.jsonl", "index": "dedup.partial.bin"}
KEY_BYTES = 16  # the exact-duplicate key of chunk_signatures (blake2b-128)


@dataclass
class Tally:
    """What a run has counted so far; restored on --resume. `seconds`: the time of the runs before this one."""

    counts: Counter = field(default_factory=Counter)  # docs_in, train_docs, val_docs, bytes_out
    removed: Counter = field(default_factory=Counter)  # by the filters and dedup (the readers count apart)
    pii: Counter = field(default_factory=Counter)
    seconds: float = 0.0


class PartialOutput:
    """The partial files of one run in `out`. Constructing it checks an interrupted run's record (with
    `resume`) and writes nothing, so a refused resume leaves the folder as it was."""

    def __init__(self, out: Path, settings: dict[str, Any], *, num_perm: int, dedup: bool, resume: bool):
        self.out, self.settings, self.num_perm = out, settings, num_perm
        self.paths = {name: out / file for name, file in FILES.items() if name != "index" or dedup}
        self.remedy = f"delete {out / PROGRESS} to prepare anew"
        self.saved = self._saved() if resume else None
        self.created = not out.exists()  # a folder this run makes goes again if bad input ends it
        self.files: dict[str, IO[bytes]] = {}
        self._open_files = contextlib.ExitStack()

    def _saved(self) -> dict[str, Any]:
        saved = read_json(self.out / PROGRESS, self.remedy, keys=("settings", "docs_in", "sizes", "counts", "removed",
                                                                 "pii", "seconds"))
        check_same_settings(saved["settings"], self.settings, files={"inputs_sha256": "the input"})
        for name, size in saved["sizes"].items():
            path = self.out / FILES[name]
            if not path.is_file() or path.stat().st_size < size:
                raise ArtifactError(f"{path} holds less than {self.out / PROGRESS} records: {self.remedy}")
        return saved

    def open(self, index: DedupIndex | None) -> Tally:
        """Open the files for appending: cut back to the record and the index refilled, or new and empty."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.saved is None:
            self.files = {name: self._open(path, "wb") for name, path in self.paths.items()}
            tally = Tally()
            self.checkpoint(tally, 0.0)
            return tally
        for name, size in self.saved["sizes"].items():
            os.truncate(self.paths[name], size)
        if index is not None:
            self._refill(index)
        self.files = {name: self._open(path, "ab") for name, path in self.paths.items()}
        return Tally(Counter(self.saved["counts"]), Counter(self.saved["removed"]), Counter(self.saved["pii"]),
                     float(self.saved["seconds"]))

    def _open(self, path: Path, mode: str) -> IO[bytes]:
        return self._open_files.enter_context(open(path, mode))  # noqa: SIM115 - closed by close()

    def _refill(self, index: DedupIndex) -> None:
        """Index the documents the interrupted run kept, in the order it kept them (so the index answers as it
        would have), from their keys and signatures."""
        record = KEY_BYTES + 4 * self.num_perm
        with reading(self.paths["index"], self.remedy), open(self.paths["index"], "rb") as f:
            while block := f.read(record * 65536):
                rows = np.frombuffer(block, dtype=np.uint8).reshape(-1, record)
                sigs = rows[:, KEY_BYTES:].copy().view(np.uint32)
                bands = chunk_band_keys(sigs, index.bands, index.rows).tolist()
                for row, sig, keys in zip(rows, sigs, bands, strict=True):
                    if index.add(row[:KEY_BYTES].tobytes(), sig, keys):
                        raise ValueError("it holds a document twice")

    def append(self, train: list[str], val: list[str], keys: list[bytes], sigs: np.ndarray) -> None:
        """One chunk's kept documents: their JSONL lines by split, and (with dedup) their keys and signatures."""
        self.files["train"].write("".join(train).encode("utf-8"))
        self.files["val"].write("".join(val).encode("utf-8"))
        if keys:
            key_bytes = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, KEY_BYTES)
            self.files["index"].write(np.concatenate([key_bytes, sigs.view(np.uint8)], axis=1).tobytes())

    def sync(self) -> None:
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())

    def checkpoint(self, tally: Tally, seconds: float) -> None:
        """Sync the files, then record how far they go (`seconds`: this run's time so far)."""
        self.sync()
        write_json(self.out / PROGRESS, {
            "settings": self.settings, "docs_in": tally.counts["docs_in"],
            "sizes": {name: f.tell() for name, f in self.files.items()}, "counts": dict(tally.counts),
            "removed": dict(tally.removed), "pii": dict(tally.pii), "seconds": tally.seconds + seconds})

    def close(self) -> None:
        """Sync and close the files (a run stopped by Ctrl-C keeps what it wrote after its last checkpoint
        until --resume cuts it back)."""
        if self.files:
            self.sync()
            self._open_files.close()
            self.files = {}

    def __enter__(self) -> PartialOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def discard(self) -> None:
        """Bad input ended the run: its files go, and the folder is as it was before it (absent if it made it)."""
        self.close()
        for path in [self.out / PROGRESS, *self.paths.values()]:
            path.unlink(missing_ok=True)
        if self.created:
            with contextlib.suppress(OSError):  # not empty after all: leave it, the error to report is the input's
                self.out.rmdir()

    def finish(self) -> None:
        """Rename the whole outputs into place. The record goes first: a kill between the renames leaves a
        folder that a new run redoes, never a resume of files that are gone."""
        self.close()
        (self.out / PROGRESS).unlink()
        os.replace(self.paths["train"], self.out / "train.jsonl")
        os.replace(self.paths["val"], self.out / "val.jsonl")
        if "index" in self.paths:
            self.paths["index"].unlink()
