"""API errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with a 4xx/5xx status.

Handlers raise `ApiError`; app.py turns it (and FastAPI's validation errors, unknown routes and any
unexpected exception) into this body, so clients such as the `openai` package raise their usual errors.
"""

from __future__ import annotations

from typing import Any

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
         429: "rate_limit_error", 500: "server_error", 503: "server_error", 504: "timeout_error"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The error body; text that echoes the request (an unknown id, a field name) is made UTF-8-safe (a lone
    surrogate becomes its escape, \\ud800), since failing to encode an error would turn a 4xx into a 500."""
    kind = TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": _encodable(message), "type": kind, "param": param and _encodable(param),
                      "code": code}}


def _encodable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


DATABASE_RETRY_SECONDS = 1


def database_unavailable(exc: Exception) -> ApiError:
    """The 503 for a database that is busy (SQLite still locked by another process after its busy_timeout) or
    unreachable (PostgreSQL down): temporary, so the client is told to retry, and no bug (no 500, no traceback)."""
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    return ApiError(503, f"the database is busy or unreachable ({reason}); retry shortly", code="database_unavailable",
                    headers={"Retry-After": str(DATABASE_RETRY_SECONDS)})
