"""Request bodies whose text is not UTF-8 or holds NUL, found at the gateway and refused there with a 400.

Python strings can hold what no UTF-8 text can: a JSON body may spell a lone UTF-16 surrogate ("\\ud800").
pydantic does not refuse it, so without this check it fails far away, in a tokenizer (TypeError) or while
writing a response or a database row (UnicodeEncodeError): a 500. (argv and stdin: `genforge.config.not_utf8`.)
NUL ("\\u0000") is valid text, but PostgreSQL cannot store it in a text column: the request or its feedback
would fail to be stored (a 500) on a PostgreSQL database only, so it is refused on every database alike.
"""

from __future__ import annotations

import json
import re

from genforge.config import bad_text_in, not_utf8

SUSPECT_ESCAPE = re.compile(rb"\\u([dD][89a-fA-F]|0000)")  # how JSON spells a surrogate (\uD800-\uDFFF) or NUL
NUL = "a NUL character (U+0000)"


def text_problem(text: str) -> str | None:
    """What keeps `text` from being stored as text ("lone surrogate \\ud800", NUL); None when nothing does."""
    return not_utf8(text) or (NUL if "\0" in text else None)


def refusal(where: str, problem: str) -> str:
    """The 400's message for a string `where` of a request with this problem."""
    if problem == NUL:
        return f"{where} holds {NUL}, which the database cannot store; remove it"
    return f"{where} is not valid Unicode text ({problem}); send UTF-8 text"


def bad_json_text(body: bytes) -> tuple[str, str] | None:
    """(where, problem) of a string (or key) of a JSON body that is not UTF-8 text or holds NUL, e.g.
    ("messages.0.content", "lone surrogate \\ud800"); None when there is none or the body is not JSON (FastAPI
    refuses that itself).

    Only a body that spells a surrogate or NUL escape is parsed, so ordinary requests cost one byte scan.
    `where` is dotted like the validation errors' `param` (a bad key is named by its path, escaped)."""
    if not SUSPECT_ESCAPE.search(body):
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    found = bad_text_in(data, text_problem)
    return (found[0] or "body", found[1]) if found else None
