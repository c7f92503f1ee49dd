"""Knowledge-base ingestion: FAQ files and documents to passages, and the tokens BM25 indexes.

A FAQ entry is one answer with all the ways customers ask for it: rows with the same `id` (or, without
ids, the same answer) are one entry, and each question variant is its own passage, so a paraphrase
finds its closest variant. Documents (Markdown, text, HTML) are cut into overlapping character windows,
ending on a paragraph or sentence boundary when one is near, so a fact cut by one boundary is whole in
the neighbouring chunk. Text is read with its real encoding (charset detection in read_records /
genforge.data.readers), so GBK or Latin-1 files work.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from genforge.errors import DataError
from genforge.finetune.data import FORMATS, read_records

DOCS = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".html": "html", ".htm": "html"}
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_BREAKS = ("\n\n", "\n", "。", "！", "？", ". ", "! ", "? ", "; ", "，", ", ", " ")
STOPWORDS = frozenset({"a", "an", "the", "is", "are", "was", "were", "be", "been", "to", "of", "in", "on", "for",
                       "and", "or", "my", "me", "i", "you", "your", "it", "this", "that", "do", "does", "did", "can",
                       "could", "would", "should", "will", "with", "at", "by", "from", "how", "what", "when",
                       "where", "which", "who", "please", "then", "about", "so", "ok", "okay", "also", "but",
                       "there", "they", "them", "its", "that's"})


@dataclass
class Passage:
    id: int
    kind: str  # "faq" | "doc"
    entry: str  # the FAQ id (or the document chunk's own id): what a hit counts as
    text: str  # what is indexed: a question variant, or a document chunk
    answer: str  # the FAQ answer; for a chunk, the chunk itself
    source: str  # file:line or file#chunk, for citations

    def to_dict(self) -> dict:
        return asdict(self)


def tokens(text: str) -> list[str]:
    """BM25 terms: lower-cased words, Chinese runs segmented by jieba (search mode), stop words dropped."""
    out = []
    for word in _WORD.findall(text.lower()):
        if _CJK.search(word):
            import jieba

            out += [w for w in jieba.cut_for_search(word) if w.strip()]
        elif word not in STOPWORDS:
            out.append(word)
    return out


def read_faq(path: Path, start: int = 0, name: str | None = None) -> list[Passage]:
    """Passages of one FAQ file (fields question, answer and optional id/intent); `name` (default the file
    name) is what its citations call it."""
    name = name or path.name
    passages, by_answer = [], {}
    for lineno, row in read_records(path):
        question, answer = str(row.get("question") or "").strip(), str(row.get("answer") or "").strip()
        if "question" not in row or "answer" not in row:
            raise DataError(f"{path}:{lineno}: a FAQ row needs 'question' and 'answer' fields (it has: "
                            f"{', '.join(map(str, row))})")
        if not question or not answer:
            continue
        given = str(row.get("id") or row.get("intent") or "").strip()
        entry = given or by_answer.setdefault(answer, "faq-" + hashlib.sha256(answer.encode()).hexdigest()[:10])
        passages.append(Passage(start + len(passages), "faq", entry, question, answer, f"{name}:{lineno}"))
    if not passages:
        raise DataError(f"{path} holds no FAQ rows with a question and an answer")
    return passages


def document_text(path: Path) -> str:
    from genforge.data.readers import SkipFile, detect_encoding

    try:
        raw = path.read_text(encoding=detect_encoding(path), errors="replace")
    except SkipFile as e:
        raise DataError(f"{path} is not a text document ({e.reason})") from None
    if DOCS[path.suffix.lower()] == "html":
        from bs4 import BeautifulSoup

        soup = BeautifulSoup(raw, "html.parser")
        for tag in soup(["script", "style", "nav", "header", "footer"]):
            tag.decompose()
        raw = soup.get_text("\n")
    return re.sub(r"\n\s*\n\s*", "\n\n", raw.replace("\r\n", "\n")).strip()


def chunk(text: str, size: int, overlap: int) -> list[str]:
    """Windows of at most `size` characters, each starting `overlap` characters before the previous end."""
    chunks, start = [], 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):  # end on the strongest boundary in the window's last third
            for mark in _BREAKS:
                cut = text.rfind(mark, start + size * 2 // 3, end)
                if cut > start:
                    end = cut + len(mark)
                    break
        piece = text[start:end].strip()
        if piece:
            chunks.append(piece)
        if end >= len(text):
            break
        start = max(end - overlap, start + 1)
    return chunks


def read_document(path: Path, size: int, overlap: int, start: int, name: str) -> list[Passage]:
    """Chunk passages of one document; `name` makes their entry ids, so it tells the document apart from every
    other one of the knowledge base."""
    return [Passage(start + i, "doc", f"{name}#{i}", piece, piece, f"{name}#{i}")
            for i, piece in enumerate(chunk(document_text(path), size, overlap))]


def kb_files(paths: list[Path]) -> list[Path]:
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in {*DOCS, *FORMATS})
            if not found:
                raise DataError(f"knowledge-base folder {path} has no FAQ (.csv .tsv .jsonl .json) or document "
                                "(.md .txt .html) files")
            files += found
        elif path.is_file():
            if path.suffix.lower() not in {*DOCS, *FORMATS}:
                raise DataError(f"{path}: unsupported knowledge-base file; use a FAQ (.csv .tsv .jsonl .json) or "
                                "a document (.md .txt .html)")
            files.append(path)
        else:
            raise DataError(f"knowledge-base path not found: {path}")
    return files


def kb_root(paths: list[Path]) -> str:
    """The folder that holds every --kb path: files are named by their path below it, so two README.md in
    different folders are two documents (two entries), not one."""
    return os.path.commonpath([os.path.abspath(p if p.is_dir() else p.parent) for p in map(Path, paths)])


def ingest(paths: list[Path], chunk_chars: int = 800, overlap: int = 200) -> list[Passage]:
    """Every passage of the knowledge base, ids in order."""
    passages: list[Passage] = []
    files = kb_files(paths)
    root = kb_root(paths)
    for path in files:
        name = Path(os.path.relpath(os.path.abspath(path), root)).as_posix()
        if path.suffix.lower() in FORMATS:
            passages += read_faq(path, len(passages), name)
        else:
            passages += read_document(path, chunk_chars, overlap, len(passages), name)
    if not passages:
        raise DataError("the knowledge base is empty")
    return passages
