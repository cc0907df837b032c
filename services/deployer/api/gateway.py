"""The serving gateway's routes: `/deployments/{id}/invocations` and the Open Inference (V2) paths.

Authentication: `Authorization: Bearer <API key>` (or a login token) whose owner can read the deployment's
project with the `deployments:read` scope; verdicts are cached for a few seconds, so a revoked key stops
working within that time. The gateway itself lives for the app's lifetime (one keep-alive HTTP client).

The serving routes are documented in OpenAPI like any other, but they are raw routes (shared.core.hot_routes):
the app serves their paths before its middleware and routing, and without FastAPI's per-request machinery
(Request and Response objects, dependency solving, parameter validation), which cost more CPU than the
forwarding itself. `ServingRoute.serve` takes the body and two headers straight from ASGI, forwards, and
answers with the model server's status and body as they came; errors get the app's usual error bodies.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session
from starlette.types import Scope

from services.deployer.domain.gateway import Gateway, SessionScope
from services.deployer.domain.prediction_log import PredictionLogger, database_sink
from services.deployer.domain.rollout_state import CounterStore, DatabaseCounterStore, RedisCounterStore
from services.deployer.domain.upstream import HttpUpstreamClient, UpstreamClient
from services.deployer.schemas import ShadowStatsRead
from shared.core.deps import MaxResults, PageToken
from shared.core.docs import AUTHENTICATED_BY_BEARER, error_responses
from shared.core.hot_routes import RawAnswer, RawRoute
from shared.core.pagination import Page, sequence_page
from shared.core.settings import Settings


def build_gateway(app: FastAPI, client: UpstreamClient) -> Gateway:
    settings: Settings = app.state.settings

    # Read at call time: tests swap app.state.db after the app is built.
    def session_scope() -> AbstractContextManager[Session]:
        return app.state.db.session_scope()

    return Gateway(
        session_scope=session_scope,
        stats_store=rollout_state_store(settings, session_scope),
        stats_flush_interval_s=settings.deployer_state_flush_interval_s,
        authenticator=app.state.authenticator,
        client=client,
        prediction_log=PredictionLogger(
            database_sink(session_scope),
            max_batch=settings.deployer_log_batch_size,
            flush_interval_s=settings.deployer_log_flush_interval_s,
        ),
        route_ttl_s=settings.deployer_route_ttl_s,
    )


def rollout_state_store(settings: Settings, session_scope: SessionScope) -> CounterStore:
    """Redis when the platform's broker is Redis (every process and host shares it); the database otherwise,
    as on `tessera up`'s embedded default."""
    if settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        return RedisCounterStore(settings.broker_url, settings.broker_key_prefix)
    return DatabaseCounterStore(session_scope)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Generous pool: every concurrent request holds one connection to a model server.
    client = HttpUpstreamClient(max_connections=512, timeout_s=60.0, connect_timeout_s=2.0)
    app.state.deployer_gateway = build_gateway(app, client)
    try:
        yield
    finally:
        await app.state.deployer_gateway.aclose()
        await client.aclose()


router = APIRouter(prefix="/deployments/{deployment_id}", tags=["gateway"], lifespan=_lifespan)


_NOT_A_UUID = "Input should be a valid UUID"
# The deployment ids seen in paths, parsed once (cleared when full: ids come from callers).
_deployment_ids: dict[str, uuid.UUID] = {}


class ServingRoute(RawRoute):
    """A gateway route: FastAPI documents it from its endpoint's signature, `serve` answers it.

    The endpoint is never called: it only declares the operation's path parameters for OpenAPI.
    """

    async def serve(self, scope: Scope, body: bytes | None) -> RawAnswer:
        raw_id = scope["path_params"]["deployment_id"]
        deployment_id = _deployment_ids.get(raw_id)
        if deployment_id is None:
            try:
                deployment_id = uuid.UUID(raw_id)
            except ValueError:
                error = {"type": "uuid_parsing", "loc": ("path", "deployment_id"), "msg": _NOT_A_UUID}
                raise RequestValidationError([error]) from None
            if len(_deployment_ids) >= 4096:
                _deployment_ids.clear()
            _deployment_ids[raw_id] = deployment_id
        # Everything after /deployments/{id}: the model server's own path.
        path = scope["path"].partition(raw_id)[2]
        content_type = authorization = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        gateway: Gateway = scope["app"].state.deployer_gateway
        answer = await gateway.forward(deployment_id, path, body, content_type, authorization, scope["headers"])
        headers = [
            (b"content-type", answer.media_type.encode("latin-1")),
            (b"content-length", b"%d" % len(answer.content)),
            *answer.raw_headers,
        ]
        return answer.status_code, headers, answer.content


# The path parameters of the serving operations, for OpenAPI (no docstrings: they would become descriptions).
async def _deployment_operation(deployment_id: uuid.UUID) -> Response:
    raise NotImplementedError("served by ServingRoute.handle")


async def _model_operation(deployment_id: uuid.UUID, model_name: str) -> Response:
    raise NotImplementedError("served by ServingRoute.handle")


for _method, _path, _name, _summary in (
    (
        "POST",
        "/invocations",
        "invocations",
        "Score with the MLflow scoring protocol (stable/canary split, shadow mirror)",
    ),
    ("POST", "/v2/models/{model_name}/infer", "infer", "Open Inference Protocol (V2) inference"),
    ("GET", "/v2/health/live", "v2_read", "V2 liveness of the stable server"),
    ("GET", "/v2/health/ready", "v2_read", "V2 readiness of the stable server"),
    ("GET", "/v2/models/{model_name}", "v2_read", "V2 model metadata"),
    ("GET", "/v2/models/{model_name}/ready", "v2_read", "V2 model readiness"),
):
    router.add_api_route(
        _path,
        _model_operation if "{model_name}" in _path else _deployment_operation,
        methods=[_method],
        name=_name,
        summary=_summary,
        route_class_override=ServingRoute,
        # Besides the model server's own answers, which pass through as they came.
        responses=error_responses(502, 503),
        openapi_extra=AUTHENTICATED_BY_BEARER,
    )


@router.get(
    "/shadow",
    response_model=Page[ShadowStatsRead],
    summary="Shadow comparisons of every gateway process",
    openapi_extra=AUTHENTICATED_BY_BEARER,
)
async def shadow_stats(
    deployment_id: uuid.UUID, request: Request, page_token: PageToken = None, max_results: MaxResults = 100
) -> dict[str, Any]:
    gateway: Gateway = request.app.state.deployer_gateway
    # Same authorization as serving: whoever may call the deployment may see how its shadow compares.
    await gateway.authorize_deployment(deployment_id, request.headers.get("authorization"))
    stats = [
        ShadowStatsRead(model_version_id=version_id, exact_match_rate=snapshot.exact_match_rate, **asdict(snapshot))
        for version_id, snapshot in (await gateway.shadow_stats(deployment_id)).items()
    ]
    return sequence_page(stats, page_token=page_token, max_results=max_results)
