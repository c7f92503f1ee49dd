"""`genforge app recommend serve`: POST /v1/recommend on genforge's serving stack.

The app is genforge.serve's own (`create_app`: keys, rate limits, gateway, /metrics, /v1/feedback,
/v1/ab/report) with one more router. No language model is served through the OpenAI routes; the
recommenders are held by the router. Each answer is stored as a response row (route "recommend", model =
the public name, variant = the recommender that answered, response = the recommended item ids), so
POST /v1/feedback {response_id, thumbs|rating} works on recommendations and `genforge ab report` compares
two recommenders served as A/B arms (`--variant NAME=DIR:WEIGHT`, sticky per user as for chat models).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from genforge.apps.recommend.config import RecServeConfig
from genforge.apps.recommend.query import query_of
from genforge.apps.recommend.recommender import UnknownGenre
from genforge.errors import DataError
from genforge.serve.app import Authorized
from genforge.serve.errors import ApiError
from genforge.serve.schemas import JsonBody
from genforge.serve.store import Record, save


class Filters(JsonBody):
    """Unknown keys are rejected: a misspelt filter would otherwise be dropped and the answer go unfiltered."""

    model_config = ConfigDict(extra="forbid")
    genres: list[str] = Field(default_factory=list, description="only items with one of these genres")
    exclude: list[str] = Field(default_factory=list, description="item ids never to recommend")


class RecommendRequest(JsonBody):
    """Unknown keys are rejected (a misspelt `filters` would silently recommend unfiltered items)."""

    model_config = ConfigDict(extra="forbid")
    user: str | None = Field(None, max_length=256, description="a known user id")
    items: list[str] = Field(default_factory=list, max_length=200, description="item ids the user likes")
    text: str | None = Field(None, max_length=2000, description="free-text interests")
    k: int = Field(10, ge=1, le=100)
    filters: Filters = Field(default_factory=Filters)
    model: str | None = Field(None, description="public name or variant (default: the served recommender)")


def query_field(body: RecommendRequest) -> str:
    """The request field the query came from, so an error names the field the client has to fix."""
    return "user" if body.user is not None else "items" if body.items else "text"


def router(recommenders: dict[str, Any], public: str, experiment: Any) -> APIRouter:
    """The /v1/recommend route over loaded recommenders {name: Recommender}; `experiment` (a
    genforge.serve.ab.Experiment or None) picks the arm answering a request for the public name."""
    api = APIRouter()

    @api.post("/v1/recommend")
    async def create_recommendation(request: Request, body: RecommendRequest, caller: Authorized) -> dict[str, Any]:
        state = request.app.state.genforge
        given = sum(x is not None and x != [] for x in (body.user, body.items, body.text))
        if given != 1:
            raise ApiError(400, "give exactly one of user, items or text", param="user")
        name = body.model or public
        if name != public and name not in recommenders:
            raise ApiError(404, f"no recommender '{name}' (served: {', '.join(recommenders)})",
                           param="model", code="model_not_found")
        weights_id = None
        if name == public and experiment is not None:
            variant, weights_id = await run_in_threadpool(experiment.choose, body.user)
        else:
            variant = name if name in recommenders else next(iter(recommenders))
        model = recommenders[variant]
        started = time.perf_counter()

        def answer() -> list[dict[str, Any]]:
            q = query_of(model, body.user, body.items, body.text)
            return model.recommend(q, body.k, genres=body.filters.genres,
                                   exclude=body.filters.exclude)

        try:
            rows = await run_in_threadpool(answer)
        except UnknownGenre as e:
            raise ApiError(400, str(e), param="filters.genres") from None
        except DataError as e:
            raise ApiError(404 if "unknown" in str(e) else 400, str(e), param=query_field(body)) from None
        rid = f"rec-{uuid.uuid4().hex}"
        latency = time.perf_counter() - started
        if state.cfg.store:
            rec = Record(id=rid, route="recommend", model=name, variant=variant, weights_id=weights_id,
                         user=body.user, caller=caller.name, request=body.model_dump(),
                         texts=[row["item"] for row in rows], finish=["stop"], status=200, prompt_tokens=0,
                         completion_tokens=0, latency=latency, ttft=None)
            await run_in_threadpool(save, state.keys.engine, rec)
        return {"id": rid, "object": "recommendation", "model": name, "variant": variant, "data": rows,
                "latency_ms": round(latency * 1000, 1)}

    return api


def create_recommend_app(cfg: RecServeConfig, keys: Any = None) -> Any:
    """The FastAPI app of `serve`: genforge's server with the recommenders' router included."""
    import os

    import torch

    from genforge.apps.recommend.recommender import load
    from genforge.serve.ab import Experiment
    from genforge.serve.app import ServerState, create_app
    from genforge.serve.config import KEY_ENV, ServeConfig, default_db_url, parse_variant
    from genforge.serve.db import connect
    from genforge.serve.keys import Keys

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    public = cfg.name or Path(cfg.model).resolve().name
    variants = [parse_variant(v) for v in cfg.variant]
    recommenders = {public: load(cfg.model, scorer=cfg.scorer)}
    recommenders |= {v.name: load(v.path, scorer=cfg.scorer) for v in variants}
    serve_cfg = ServeConfig(model=cfg.model, name=public, host=cfg.host, port=cfg.port, db=cfg.db,
                            api_key=cfg.api_key, store=cfg.store, redact_pii=False)
    keys = keys or Keys(connect(cfg.db or default_db_url()), cfg.api_key or os.environ.get(KEY_ENV))
    experiment = None
    weighted = [v for v in variants if v.weighted]
    if weighted:
        total = sum(v.weight for v in weighted)
        weights = {public: 1.0 - total if total < 1 else 1.0, **{v.name: v.weight for v in weighted}}
        experiment = Experiment(public, weights, keys.engine)
        experiment.start()
    app = create_app(ServerState(cfg=serve_cfg, models={}, keys=keys))
    app.include_router(router(recommenders, public, experiment))
    return app


def serve(cfg: RecServeConfig) -> None:
    """Serve until Ctrl-C (blocking), as `genforge serve` does (`run_app`)."""
    from genforge.serve.config import ServeConfig
    from genforge.serve.server import check_exposure, run_app

    app = create_recommend_app(cfg)
    state = app.state.genforge
    check_exposure(ServeConfig(model=cfg.model, host=cfg.host), state.keys)
    print(f"recommending on http://{cfg.host}:{cfg.port}/v1/recommend", flush=True)
    run_app(app, cfg.host, cfg.port)
