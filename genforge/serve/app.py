"""The FastAPI application: routes, authorisation, the request gateway and OpenAI-shaped errors.

`create_app(state)` builds the app over already loaded models (`ServerState`); its lifespan starts and
stops the engines' worker threads. Besides the OpenAI routes: POST /v1/feedback, GET /v1/ab/report (the
dashboard's data) and the web pages under /ui (chat and A/B dashboard, static files in ui/). The gateway (pure
ASGI, so it also sees streamed bodies end) gives each request an id, refuses bodies over the size limit with
413 and JSON strings that are not UTF-8 text (lone surrogates) or hold NUL with 400 for every route, the
applications' included, and records metrics and one JSON access-log line. /health and /metrics are open;
every /v1 route needs a key when keys exist.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from genforge import __version__
from genforge.errors import ConfigError
from genforge.serve import completions
from genforge.serve.config import ServeConfig
from genforge.serve.errors import ApiError, database_unavailable, error_body
from genforge.serve.keys import Caller, Keys, RateLimiter
from genforge.serve.logs import REQUEST_ID, request_id
from genforge.serve.metrics import Metrics
from genforge.serve.models import ServedModel, classify, embed
from genforge.serve.safety import Safety
from genforge.serve.schemas import (
    ChatRequest,
    ClassifyRequest,
    CompletionRequest,
    EmbeddingRequest,
    FeedbackRequest,
    as_list,
)
from genforge.serve.store import add_feedback
from genforge.serve.text import bad_json_text, refusal

log = logging.getLogger("genforge.serve")
access = logging.getLogger("genforge.serve.access")
UI = Path(__file__).parent / "ui"
PAGES = {"chat": "chat.html", "dashboard": "dashboard.html"}
JSON_TYPES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array",
              dict: "an object", type(None): "null"}  # what a wrong-typed value was, in a 400's message


@dataclass
class ServerState:
    cfg: ServeConfig
    models: dict[str, ServedModel]
    keys: Keys
    metrics: Metrics = field(default_factory=Metrics)
    limiter: RateLimiter = field(init=False)  # buckets in the keys' database, shared by replicas
    safety: Safety = field(default_factory=lambda: Safety(redact_pii=False))
    experiment: Any = None  # genforge.serve.ab.Experiment of the --model name, when it has weighted variants

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.keys.engine)

    def model(self, name: str) -> ServedModel:
        if name not in self.models:
            served = f"served: {', '.join(self.models)}" if self.models else "this server serves no language model"
            raise ApiError(404, f"model '{name}' is not served here ({served})", param="model",
                           code="model_not_found")
        return self.models[name]


def authorize(request: Request) -> Caller:
    """The caller of a /v1 request (a sync dependency: the database lookup runs in the thread pool)."""
    state: ServerState = request.app.state.genforge
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    caller = state.keys.check(token.strip() if scheme.lower() == "bearer" else None)
    if caller is None:
        raise ApiError(401, "invalid or missing API key: send the header 'Authorization: Bearer KEY'",
                       code="invalid_api_key")
    wait = state.limiter.acquire(caller.name, caller.rate_limit)
    if wait:
        raise ApiError(429, f"rate limit of {caller.rate_limit} requests per minute reached for key "
                            f"'{caller.name}'", code="rate_limit_exceeded",
                       headers={"Retry-After": str(math.ceil(wait))})
    request.state.caller = caller
    return caller


Authorized = Annotated[Caller, Depends(authorize)]


class Gateway:
    """Request id, body size limit, metrics and access log around every HTTP request."""

    def __init__(self, app: Any, state: ServerState):
        self.app, self.state = app, state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        rid = request_id(headers.get("x-request-id"))
        token = REQUEST_ID.set(rid)
        started, status = time.perf_counter(), [500]

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", rid)
            await send(message)

        try:
            try:
                body = await self._body(headers, receive)
            except ClientDisconnect:  # gone before its body arrived: nothing to answer, and no bad JSON either
                status[0] = 499
                return
            if body is None:
                limit = self.state.cfg.max_body_bytes
                await _send_json(send_with_id, 413, error_body(413, f"request body over {limit} bytes",
                                                               code="request_too_large"))
                return
            bad = bad_json_text(body)
            if bad is not None:  # refused here, before any route: no handler, tokenizer or app router sees it
                where, problem = bad
                await _send_json(send_with_id, 400, error_body(400, refusal(where, problem), param=where))
                return
            replayed = False

            async def replay() -> dict:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send_with_id)
        finally:
            route = _route_path(scope)
            seconds = time.perf_counter() - started
            self.state.metrics.requests.labels(route, str(status[0])).inc()
            self.state.metrics.latency.labels(route).observe(seconds)
            access.info("request", extra={"method": scope["method"], "path": scope["path"], "status": status[0],
                                          "ms": round(1000 * seconds, 1)})
            REQUEST_ID.reset(token)

    async def _body(self, headers: dict[str, str], receive: Any) -> bytes | None:
        """The whole request body, or None when it is over the limit (read no further than that); ClientDisconnect
        when the client leaves before sending all of it (what arrived would read as a truncated, bad JSON body)."""
        limit = self.state.cfg.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return None
            if not message.get("more_body"):
                break
        return b"".join(chunks)


def _route_path(scope: dict) -> str:
    """The route template a request is counted under in the metrics: the one routing chose, else (a request
    refused before routing, e.g. 413 or a NUL in its JSON) the one its path and method would have reached, so
    dashboards show those refusals on /v1/chat/completions; "unmatched" only for paths no route serves (a
    label per raw path would let any client grow the metrics without bound)."""
    if scope.get("route") is not None:
        return scope["route"].path
    method_not_allowed = None  # a PARTIAL match: the path is served, by another method (routing would say 405)
    for route in scope["app"].router.routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return getattr(route, "path", "unmatched")
        if match == Match.PARTIAL and method_not_allowed is None:
            method_not_allowed = getattr(route, "path", None)
    return method_not_allowed or "unmatched"


async def _send_json(send: Any, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(x) for x in err.get("loc", ()) if x != "body"]
    if err.get("type") == "json_invalid":  # its loc is ("body", character offset): no field to name
        message = f"the request body is not valid JSON: {err.get('ctx', {}).get('error', err['msg'])}"
        loc = []
    else:
        message = f"{'.'.join(loc) or 'body'}: {err['msg']}"
        if err.get("type", "").endswith("_type") and type(err.get("input")) in JSON_TYPES:
            message += f", not {JSON_TYPES[type(err['input'])]}"  # "true" for a boolean looks right unless said
    return JSONResponse(error_body(400, message, param=".".join(loc) or None), status_code=400)


def _models_list(state: ServerState) -> list[dict[str, Any]]:
    """The served models; an A/B arm's weight is its share of the experiment's traffic now (after the --model
    folder gets what the variants leave, and after promotions), not the weight it was configured with."""
    from genforge.serve.ab import shares

    split = shares(state.experiment.in_force()[1]) if state.experiment else {}
    return [{"id": m.name, "object": "model", "created": m.created, "owned_by": "genforge",
             "genforge": {"kind": m.kind, "path": str(m.path), "weight": split.get(m.name, m.weight),
                          "context": m.context, "chat": m.chat}} for m in state.models.values()]


def create_app(state: ServerState, routers: tuple = ()) -> FastAPI:
    """The app over `state`; `routers` (an application's, e.g. genforge.apps.support) come before the built-in
    routes, so an application may answer a built-in path for its own model name and pass the rest on."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for m in state.models.values():
            if m.engine is not None:
                m.engine.start()
        yield
        for m in state.models.values():
            if m.engine is not None:
                m.engine.stop()

    app = FastAPI(title="genforge", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible serving of genforge models.")
    app.state.genforge = state
    app.add_middleware(Gateway, state=state)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(OperationalError)
    async def _database_unavailable(_: Request, exc: OperationalError) -> JSONResponse:
        error = database_unavailable(exc)
        log.warning(error.message)
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body(500, f"internal error {type(exc).__name__}; see the server log"),
                            status_code=500)

    app.add_exception_handler(RequestValidationError, _validation_error)
    for router in routers:
        app.include_router(router)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "models": list(state.models)}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    def list_models(_: Authorized) -> dict[str, Any]:
        return {"object": "list", "data": _models_list(state)}

    @app.get("/v1/models/{name:path}")
    def get_model(name: str, _: Authorized) -> dict[str, Any]:
        state.model(name)
        return next(m for m in _models_list(state) if m["id"] == name)

    @app.post("/v1/completions")
    async def create_completion(request: Request, body: CompletionRequest,
                                _: Authorized) -> Any:
        return await completions.create(request, body, chat=False)

    @app.post("/v1/chat/completions")
    async def create_chat_completion(request: Request, body: ChatRequest, _: Authorized) -> Any:
        return await completions.create(request, body, chat=True)

    @app.post("/v1/feedback")
    async def create_feedback(body: FeedbackRequest, caller: Authorized) -> dict[str, Any]:
        if not state.cfg.store:
            raise ApiError(400, "this server does not store responses (--no-store), so it takes no feedback")
        try:
            fid = await run_in_threadpool(add_feedback, state.keys.engine, body.response_id, caller.name,
                                          choice=body.choice, thumbs=body.thumbs, rating=body.rating,
                                          comment=body.comment, correction=body.correction)
        except ConfigError as e:
            raise ApiError(400, str(e), param="choice") from None
        if fid is None:
            raise ApiError(404, f"no stored response with id '{body.response_id}'", param="response_id",
                           code="response_not_found")
        return {"object": "feedback", "id": fid, "response_id": body.response_id}

    @app.get("/v1/ab/report")
    async def ab_report(_: Authorized, model: str | None = None) -> dict[str, Any]:
        from genforge.serve.ab import pick_experiment
        from genforge.serve.abreport import report

        name = model or (state.experiment.name if state.experiment else None)
        if name is None:
            raise ApiError(404, "this server runs no A/B experiment (serve a --variant NAME=DIR:WEIGHT)",
                           code="no_experiment")
        try:
            name = await run_in_threadpool(pick_experiment, state.keys.engine, name)
        except ConfigError as e:
            raise ApiError(404, str(e), param="model", code="experiment_not_found") from None
        return await run_in_threadpool(report, state.keys.engine, name)

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("/ui/chat")

    @app.get("/ui/config", include_in_schema=False)
    def ui_config() -> dict[str, Any]:
        """What the pages need: the model to chat with (the experiment's name hides the variant), and whether
        replies can be rated (a --no-store server keeps no responses to rate)."""
        chat = [m.name for m in state.models.values() if m.kind == "lm" and m.chat]
        default = state.experiment.name if state.experiment else (chat[0] if chat else None)
        return {"model": default, "experiment": state.experiment.name if state.experiment else None,
                "key_required": state.keys.static_key is not None or state.keys.required(),
                "feedback": state.cfg.store}

    @app.get("/ui/common.js", include_in_schema=False)
    def ui_script() -> FileResponse:
        return FileResponse(UI / "common.js", media_type="text/javascript")

    @app.get("/ui/{page}", include_in_schema=False)
    def ui_page(page: str) -> FileResponse:
        if page not in PAGES:
            raise ApiError(404, f"no page '{page}' (pages: {', '.join(PAGES)})")
        return FileResponse(UI / PAGES[page], media_type="text/html")

    @app.post("/v1/embeddings")
    async def create_embedding(body: EmbeddingRequest, _: Authorized) -> dict[str, Any]:
        body.refuse_unsupported()
        served = state.model(body.model)
        if getattr(served.module, "base_model", None) is None:  # an ONNX graph returns logits only
            raise ApiError(400, f"model '{served.name}' is an ONNX Runtime graph without hidden states: embeddings "
                                "need a PyTorch model folder (compress with int8 instead of onnx-int8)", param="model")
        longest = served.context or 512
        inputs = []
        for item in as_list(body.input, "input"):
            ids = list(served.tokenizer(item)["input_ids"]) if isinstance(item, str) else item
            if not ids or len(ids) > longest:
                raise ApiError(400, f"each input must have 1 to {longest} tokens; got {len(ids)}", param="input",
                               code="context_length_exceeded" if ids else None)
            if any(not 0 <= i < served.module.config.vocab_size for i in ids):
                raise ApiError(400, "token ids out of the model's vocabulary", param="input")
            inputs.append(ids)
        vectors = await run_in_threadpool(embed, served, inputs)
        if body.encoding_format == "base64":
            vectors = [base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() for v in vectors]
        tokens = sum(len(ids) for ids in inputs)
        return {"object": "list", "model": served.name,
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    @app.post("/v1/classify")
    async def create_classification(body: ClassifyRequest, _: Authorized) -> dict[str, Any]:
        body.refuse_unsupported()
        served = state.model(body.model)
        if served.kind != "classifier":
            raise ApiError(400, f"model '{served.name}' is not a classifier (a `genforge finetune classify` "
                                "run folder)", param="model")
        texts = as_list(body.input, "input")
        if any(not isinstance(t, str) for t in texts):
            raise ApiError(400, "input must be a string or a list of strings", param="input")
        results, tokens = await run_in_threadpool(classify, served, texts)
        return {"object": "list", "model": served.name,
                "data": [{"object": "classification", "index": i, **r} for i, r in enumerate(results)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    return app
