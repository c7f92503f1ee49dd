"""Request bodies whose text is not UTF-8, found at the gateway and refused there with a 400.

Python strings can hold what no UTF-8 text can: a JSON body may spell a lone UTF-16 surrogate ("\\ud800").
pydantic does not refuse it, so without this check it fails far away, in a tokenizer (TypeError) or while
writing a response or a database row (UnicodeEncodeError): a 500. (argv and stdin: `genforge.config.not_utf8`.)
"""

from __future__ import annotations

import json
import re
from typing import Any

from genforge.config import not_utf8

SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # how a surrogate is spelled in JSON: \uD800-\uDFFF


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
