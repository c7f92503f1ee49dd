"""Request bodies of the OpenAI-compatible API, validated by pydantic (FastAPI turns failures into 400s).

Every body, the applications' included, is a `JsonBody`: JSON types are taken as sent, as OpenAI does
("stream": "true", "n": "2" or "temperature": "0.5" is a 400 naming the field, not coerced), except that an
integer is a number (`"temperature": 1`). Defaults follow OpenAI (temperature 1, top_p 1, completions
max_tokens 16). A JSON null means "not given". Extensions in the style of vLLM: `top_k`,
`repetition_penalty`, `ignore_eos`. OpenAI parameters genforge does not implement are refused with a 400
naming them, unless left neutral.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from genforge.serve.errors import ApiError

UNSUPPORTED = ("logprobs", "top_logprobs", "logit_bias", "frequency_penalty", "presence_penalty", "best_of",
               "suffix", "echo", "tools", "tool_choice", "functions", "function_call", "response_format",
               "parallel_tool_calls", "dimensions", "audio", "modalities", "prediction")
NEUTRAL: tuple[Any, ...] = (None, False, 0, {}, [], "none", "auto", {"type": "text"})
MAX_INPUTS = 2048  # list inputs (prompts, embedding texts), as OpenAI


def neutral(key: str, value: Any) -> bool:
    """Whether an unsupported parameter's value asks for nothing. `logprobs` only as null or false: on
    /v1/completions `logprobs: 0` asks for the log-probability of each sampled token (and 0 == False in
    Python, so NEUTRAL's 0 would let it through), which genforge does not return."""
    if key == "logprobs":
        return value is None or value is False
    return value in NEUTRAL or (key == "best_of" and value == 1)


class JsonBody(BaseModel):
    """A request body in strict mode: a value of the wrong JSON type is refused, never coerced (pydantic's lax
    mode would read "yes" as true and "2" as 2, answering a request the client did not send)."""

    model_config = ConfigDict(strict=True)


class _Body(JsonBody):
    model_config = ConfigDict(extra="allow")  # other clients' extra fields are ignored, unsupported ones refused

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data

    def refuse_unsupported(self) -> None:
        for key, value in (self.model_extra or {}).items():
            if key in UNSUPPORTED and not neutral(key, value):
                raise ApiError(400, f"'{key}' is not supported by this server", param=key, code="unsupported_parameter")


class StreamOptions(JsonBody):
    include_usage: bool = False


class Sampling(_Body):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    user: str | None = Field(None, max_length=256)
    top_k: int = Field(0, ge=-1)  # -1 (vLLM) or 0: off
    repetition_penalty: float = Field(1.0, gt=0, le=10)
    ignore_eos: bool = False

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 16 or any(not s for s in stops):
            raise ApiError(400, "stop must be up to 16 non-empty strings", param="stop")
        return stops


class CompletionRequest(Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]


class TextPart(JsonBody):
    type: Literal["text"]
    text: str


class Message(JsonBody):
    """One chat turn. Its content is required text, for assistant turns too: a null content only has a meaning
    with tool calls, which this server does not take ('tools' is refused)."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, content: Any) -> Any:
        """Name the part this server cannot read (an image, audio): pydantic's own error for the union would
        point at `content.str` and say a string was expected, which misleads a client sending parts."""
        for part in content if isinstance(content, list) else ():
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind != "text":
                raise ValueError(f"only text content parts are supported; got a part of type {kind!r}")
        return content

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    @field_validator("messages")
    @classmethod
    def _asks_something(cls, messages: list[Message]) -> list[Message]:
        """Without a user turn there is nothing to answer (and the stored request is no dialogue to learn from)."""
        if not any(m.role == "user" for m in messages):
            raise ValueError("the messages need at least one user message")
        return messages


class EmbeddingRequest(_Body):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = Field(None, max_length=256)


class ClassifyRequest(_Body):
    model: str
    input: str | list[str]
    user: str | None = Field(None, max_length=256)


def as_list(value: Any, param: str) -> list[Any]:
    """A str / list[str] / list[int] / list[list[int]] input as a non-empty list of items (str or list[int])."""
    if isinstance(value, str):
        items = [value]
    elif value and all(isinstance(v, int) for v in value):
        items = [list(value)]
    else:
        items = list(value)
    if not items:
        raise ApiError(400, f"'{param}' must not be empty", param=param)
    if len(items) > MAX_INPUTS:
        raise ApiError(400, f"'{param}' may hold at most {MAX_INPUTS} items; got {len(items)}", param=param)
    return items


class FeedbackRequest(JsonBody):
    """POST /v1/feedback: a rating of a stored response (thumbs or 1-5 stars), a comment, a better answer."""

    model_config = ConfigDict(extra="forbid")

    response_id: str = Field(min_length=1, max_length=64)
    choice: int = Field(0, ge=0, le=127, description="index of the rated choice when the request asked for n > 1")
    thumbs: Literal["up", "down"] | None = None
    rating: int | None = Field(None, ge=1, le=5)
    comment: str | None = Field(None, max_length=10_000)
    correction: str | None = Field(None, max_length=100_000)

    @model_validator(mode="after")
    def _something(self) -> FeedbackRequest:
        if self.thumbs is None and self.rating is None and not (self.comment or "").strip() and not (
                self.correction or "").strip():
            raise ValueError("give thumbs, rating, comment or correction (a blank text records nothing)")
        return self
