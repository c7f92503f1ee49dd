"""Text that is not UTF-8, found where it comes in (request bodies, argv, stdin) and refused there.

Python strings can hold what no UTF-8 text can: a JSON body may spell a lone UTF-16 surrogate ("\\ud800"),
and bytes that were not UTF-8 in argv or stdin (or in a file name) reach Python as surrogate escapes
U+DC80-U+DCFF. Neither pydantic nor the CLI refuses them, so without these checks they fail far away,
in a tokenizer (TypeError) or while writing a response or a database row (UnicodeEncodeError). Standard
library only, so the light CLI configs and the chat loop can use it too.
"""

from __future__ import annotations

import json
import re
from typing import Any

SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # how a surrogate is spelled in JSON: \uD800-\uDFFF


def not_utf8(text: str) -> str | None:
    """What keeps `text` from being UTF-8 text ("byte 0xff" or "lone surrogate \\ud800"); None when nothing does."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(text[e.start])
        return f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"lone surrogate \\u{code:04x}"
    return None


def bad_json_text(body: bytes) -> tuple[str, str] | None:
    """(where, problem) of a string (or key) of a JSON body that is not UTF-8 text, e.g. ("messages.0.content",
    "lone surrogate \\ud800"); None when there is none or the body is not JSON (FastAPI refuses that itself).

    Only a body that spells a surrogate escape is parsed, so ordinary requests cost one byte scan. `where`
    is dotted like the validation errors' `param` (a bad key is named by its path, escaped)."""
    if not SURROGATE_ESCAPE.search(body):
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:  # a loop, not recursion: the body may nest as deeply as json.loads allows
        where, value = stack.pop()
        if isinstance(value, str):
            problem = not_utf8(value)
            if problem:
                return where or "body", problem
        elif isinstance(value, dict | list):
            items = [(f"{where}.{k}" if where else str(k), v)
                     for k, v in (value.items() if isinstance(value, dict) else enumerate(value))]
            for path, _ in items:
                problem = not_utf8(path)  # a key
                if problem:
                    return path.encode("utf-8", "backslashreplace").decode(), problem
            stack.extend(reversed(items))
    return None
