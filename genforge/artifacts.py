"""Output folders, manifests and atomic writes: the contract that lets stages compose.

Every stage writes one folder. Its payload files are written atomically (temp file + rename), its
resolved config goes to `config.yaml`, and `manifest.json` is written last: a folder without a
manifest is an unfinished run, so Ctrl-C or a kill never leaves output that looks complete.
Lineage is a chain of manifests (`parent`), from a served model back to the hashes of raw files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from genforge import __version__
from genforge.config import dump_yaml, to_dict
from genforge.errors import ArtifactError, ConfigError, DataError, GenforgeError

MANIFEST = "manifest.json"
_UMASK = os.umask(0)
os.umask(_UMASK)
CONFIG = "config.yaml"


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file next to `path`; on success it replaces `path` in one rename, on error it vanishes.

    A killed writer cannot remove its temp file (`.NAME.PID.XXXXXXXX.tmp`, hidden); the next successful write
    of the same path removes those whose process is gone (model-sized ones included)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    binary = "b" in mode
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    remove_dead_temps(path)


def remove_dead_temps(path: Path) -> None:
    """Remove the temp files and folders of `path` (`.NAME.PID.tmp`, `.NAME.PID.XXXXXXXX.tmp`) left by writers
    that no longer run. POSIX only: elsewhere os.kill(pid, 0) is no mere question."""
    if os.name != "posix":
        return
    own = re.compile(rf"\.{re.escape(path.name)}\.(\d+)(?:\.[a-z0-9_]{{8}})?\.tmp")  # not those of NAME.suffix
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            found = own.fullmatch(entry.name)
            if found and not _running(int(found.group(1))):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except PermissionError:  # it does, under another user
        return True
    except (ProcessLookupError, OverflowError):
        return False
    return True


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object per line, written atomically (a reader never sees half a file)."""
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(paths: Iterable[Path]) -> str:
    """One hash over several files (e.g. a tokenizer folder), independent of their order."""
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def whole_lines(data: bytes) -> tuple[list[bytes], int]:
    """The complete lines of an append-only progress file and their length in bytes. A last line without its
    newline is what a kill mid-write leaves: it is not among them. Split at b"\\n" alone: json.dumps leaves
    U+2028 or U+0085 inside a text, where str.splitlines would cut."""
    size = data.rfind(b"\n") + 1
    return data[:size].split(b"\n")[:-1], size


def model_sha256(folder: Path) -> str:
    """One hash over the files a model is loaded from: the top of its folder (weights, config.json, tokenizer,
    classifier.json, ...), but the records of when and how it was made (manifest, config.yaml, card), so a
    rerun of the same training is the same model. checkpoints/ and logs/ lie below; an adapter's base model
    is named by its adapter_config.json, not hashed."""
    return sha256_tree(p for p in Path(folder).iterdir()
                       if p.is_file() and p.name not in {MANIFEST, CONFIG, "README.md"} and not p.name.startswith("."))


def now_iso(ts: float | None = None, timespec: str = "seconds") -> str:
    return dt.datetime.fromtimestamp(ts if ts is not None else time.time(), dt.UTC).isoformat(timespec=timespec)


def read_manifest(folder: Path, stage: str | tuple[str, ...] | None = None,
                  filename: str = MANIFEST) -> dict[str, Any]:
    """The manifest of a finished artifact; refuses a missing/unfinished folder or the wrong kind."""
    folder = Path(folder)
    if not folder.exists():
        raise ArtifactError(f"{folder} does not exist")
    path = folder / filename
    if not path.is_file():
        raise ArtifactError(f"{folder} has no {filename}: not a genforge artifact, or its run did not finish")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} is corrupt: {e}") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path} is corrupt: a JSON object was expected, not {type(manifest).__name__}")
    wanted = (stage,) if isinstance(stage, str) else stage
    if wanted and manifest.get("stage") not in wanted:
        raise ArtifactError(f"{folder} is a '{manifest.get('stage')}' artifact; expected {' or '.join(wanted)}")
    return manifest


def write_manifest(folder: Path, stage: str, config: Any, *, inputs: Iterable[Path] = (),
                   parent: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                   started: float | None = None, extra: dict[str, Any] | None = None,
                   filename: str = MANIFEST) -> dict[str, Any]:
    """Write the resolved config, then the manifest (last: it marks the folder complete). Returns the manifest.

    A stage that adds to another stage's folder (e.g. `data pack` into a prepared data folder) passes its
    own `filename` ("pack.json"); its config then goes to "pack.config.yaml" beside it.
    """
    folder = Path(folder)
    if config is not None:
        config_name = CONFIG if filename == MANIFEST else f"{Path(filename).stem}.{CONFIG}"
        atomic_write_text(folder / config_name, dump_yaml(config))
    finished = time.time()
    manifest = {
        "genforge_version": __version__,
        "stage": stage,
        "created": now_iso(finished),
        # to the millisecond: `genforge run` orders artifacts by them (an input redone after a step started)
        "started": now_iso(started, "milliseconds") if started else None,
        "finished": now_iso(finished, "milliseconds"),
        "seconds": round(finished - started, 3) if started else None,
        "config": to_dict(config) if config is not None else None,
        # absolute: a relative path would mean the folder the command ran in, which the manifest does not record
        "inputs": [{"path": str(Path(p).absolute()), "sha256": sha256_file(p)} for p in inputs],
        "parent": parent,
        "metrics": metrics or {},
        **(extra or {}),
    }
    write_json(folder / filename, manifest)
    return manifest


def check_output(folder: Path, stage: str) -> None:
    """Refuse an output folder this run cannot write; touches nothing, so a command may call it first thing.

    A folder holding a finished artifact of another stage is refused: redoing a run in its own folder is
    normal, but another command's output there would replace that artifact's manifest (a model folder
    would claim to be a feedback export).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ArtifactError(f"output {folder} exists and is not a folder")
    found = _finished(folder)
    if found and found["stage"] != stage:
        raise ArtifactError(f"--out {folder} holds a finished {found['stage']} artifact (made "
                            f"{found.get('created', '?')}; this command writes {stage}); choose another folder")


def _finished(folder: Path) -> dict[str, Any] | None:
    """The manifest of the finished artifact in `folder`; None if there is none, or it is too damaged to say
    what it is (such a folder is redone as before)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "stage" in manifest else None


def begin_output(folder: Path, stage: str) -> float:
    """Prepare an output folder for a new run of `stage` and return the start time (see `check_output`).

    An old manifest is removed first, so that if this run dies the folder no longer claims to be complete.
    That makes the earlier artifact unfinished, so a command calls this only once its inputs are read and
    checked, right before its first write: a rerun that fails on bad input leaves the old artifact whole.
    """
    folder = Path(folder)
    check_output(folder, stage)
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (folder / MANIFEST).unlink()
    return time.time()


SAME_SETTINGS = "resume with the same settings or choose another --out"


def check_resume_folder(folder: Path, *, resume: bool, started: bool, marker: str) -> None:
    """How every resumable command treats its output folder. `started`: the folder holds what the command
    writes first when it starts a run (`marker`, named to the user). --resume needs such a run; a new run
    refuses to mix with one that stopped midway (no manifest), and redoes a finished one."""
    if resume and not started:
        raise ArtifactError(f"nothing to resume: {Path(folder) / marker} does not exist; drop --resume")
    if not resume and started and not (Path(folder) / MANIFEST).is_file():
        raise ArtifactError(f"{folder} holds an unfinished run: add --resume to continue it, or choose another --out")


def check_same_settings(saved: dict[str, Any], current: dict[str, Any], files: dict[str, str] | None = None) -> None:
    """Refuse a --resume whose settings differ from those the interrupted run recorded, naming the first
    difference. `files` names the keys that are sha256 of inputs (key -> the input, e.g. "--data a.csv")."""
    def shown(value: Any) -> str:
        if isinstance(value, list):
            return ", ".join(map(str, value)) or "none"
        return "none" if value is None else str(value)

    for key in dict.fromkeys([*current, *saved]):
        new, old = current.get(key), saved.get(key)
        if new == old:
            continue
        if files and key in files:
            why = "its sha256 differs" if new and old else "given to one run only"
            raise ConfigError(f"--resume: {files[key]} is not the interrupted run's ({why}); {SAME_SETTINGS}")
        raise ConfigError(f"--resume: {key} {shown(new)} differs from the interrupted run's {shown(old)}; "
                          f"{SAME_SETTINGS}")


def check_output_file(path: Path) -> None:
    """Refuse an output file path that cannot be written (a folder, or under a file) before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"output {path} is a folder, expected a file (e.g. {path / 'out.jsonl'})")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ArtifactError(f"output {path} cannot be written: {parent} is a file, not a folder")


def input_file(path: Path, what: str = "file") -> Path:
    """`path` if it is a file; else a DataError saying whether it is missing or a folder."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{what} {path} is a folder, expected a file")
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    return path


def lineage(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The chain of manifests from this artifact back to the raw inputs, newest first."""
    chain = []
    while manifest:
        chain.append(manifest)
        manifest = manifest.get("parent")
    return chain


# Reading a finished folder's files (or an input data set) so that a damaged one is one clear error. Folders
# are read back with several libraries (json, numpy, safetensors, FAISS, LightGBM), each failing on a
# truncated, hand-edited or half-copied file in its own way (JSONDecodeError, BadZipFile, RuntimeError, a
# KeyError for a missing field). `reading` turns all of them into one GenforgeError (ArtifactError by default)
# that names the file and says how to remake it. Only the decoding belongs inside its `with` block: an
# error raised there is taken to be the file's fault.
# what json, numpy and the field look-ups raise on a damaged file (UnicodeDecodeError and
# JSONDecodeError are ValueErrors)
DAMAGED = (OSError, ValueError, KeyError, IndexError, TypeError, EOFError, zipfile.BadZipFile)


@contextlib.contextmanager
def reading(path: Path, remedy: str, also: tuple[type[Exception], ...] = (),
            error: type[GenforgeError] = ArtifactError) -> Iterator[Path]:
    """Yield `path`; a missing file, or a decoding error raised in the block (DAMAGED, plus a library's own
    error in `also`, e.g. FAISS's RuntimeError), becomes `error` naming the file and `remedy` (what to do)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path} is missing: {remedy}")
    try:
        yield path
    except (*DAMAGED, *also) as e:
        raise error(f"{path} is corrupt ({_reason(e)}): {remedy}") from None


def _reason(e: Exception) -> str:
    if isinstance(e, KeyError):
        return f"no {e} in it"
    text = str(e).strip().splitlines()
    return (text[0][:200] if text else type(e).__name__) or type(e).__name__


def read_json(path: Path, remedy: str, *, keys: tuple[str, ...] = (), kind: type = object,
              error: type[GenforgeError] = ArtifactError) -> Any:
    """The JSON value in `path`: of type `kind` (e.g. dict, list), and an object with `keys` when given."""
    with reading(path, remedy, error=error):
        value = json.loads(path.read_text(encoding="utf-8"))
        if keys:
            kind = dict
        if not isinstance(value, kind):
            raise TypeError(f"not a JSON {_json_name(kind)} but {_json_name(type(value))}")
        missing = [k for k in keys if k not in value]
        if missing:
            raise KeyError(missing[0])
        return value


def _json_name(kind: type) -> str:
    return {dict: "object", list: "array", str: "string", type(None): "null"}.get(kind, kind.__name__)
