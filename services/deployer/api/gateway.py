"""The serving gateway's routes: `/deployments/{id}/invocations` and the Open Inference (V2) paths.

Authentication: `Authorization: Bearer <API key>` (or a login token) whose owner can read the deployment's
project with the `deployments:read` scope; verdicts are cached for a few seconds, so a revoked key stops
working within that time. The gateway itself lives for the app's lifetime (one keep-alive HTTP client).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict

import httpx
from fastapi import APIRouter, FastAPI, Request, Response

from services.deployer.domain.gateway import Gateway
from services.deployer.domain.prediction_log import PredictionLogger, monitor_http_sink
from services.deployer.schemas import ShadowStatsRead
from shared.core.settings import Settings


def build_gateway(app: FastAPI, client: httpx.AsyncClient) -> Gateway:
    settings: Settings = app.state.settings
    prediction_log = None
    if settings.deployer_prediction_log_url:
        prediction_log = PredictionLogger(
            monitor_http_sink(client, settings.deployer_prediction_log_url, settings.deployer_prediction_log_api_key),
            max_batch=settings.deployer_log_batch_size,
            flush_interval_s=settings.deployer_log_flush_interval_s,
        )
    return Gateway(
        # Read at call time: tests swap app.state.db after the app is built.
        session_scope=lambda: app.state.db.session_scope(),
        authenticator=app.state.authenticator,
        client=client,
        prediction_log=prediction_log,
        route_ttl_s=settings.deployer_route_ttl_s,
    )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # httpx logs every request at INFO: on the serving path that line would cost more than the proxying.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").getEffectiveLevel()))
    # Generous pool: every concurrent request holds one connection to a model server.
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=128, keepalive_expiry=30.0)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0, connect=2.0)) as client:
        app.state.deployer_gateway = build_gateway(app, client)
        try:
            yield
        finally:
            await app.state.deployer_gateway.aclose()


router = APIRouter(prefix="/deployments/{deployment_id}", tags=["gateway"], lifespan=_lifespan)


def _gateway(request: Request) -> Gateway:
    return request.app.state.deployer_gateway


async def _forward(request: Request, deployment_id: uuid.UUID, path: str, *, with_body: bool) -> Response:
    answer = await _gateway(request).forward(
        deployment_id,
        path,
        await request.body() if with_body else None,
        request.headers.get("content-type"),
        request.headers.get("authorization"),
    )
    return Response(answer.content, answer.status_code, answer.headers, media_type=answer.media_type)


@router.post("/invocations", summary="Score with the MLflow scoring protocol (stable/canary split, shadow mirror)")
async def invocations(deployment_id: uuid.UUID, request: Request) -> Response:
    return await _forward(request, deployment_id, "/invocations", with_body=True)


@router.post("/v2/models/{model_name}/infer", summary="Open Inference Protocol (V2) inference")
async def infer(deployment_id: uuid.UUID, model_name: str, request: Request) -> Response:
    return await _forward(request, deployment_id, f"/v2/models/{model_name}/infer", with_body=True)


@router.get("/v2/health/live", summary="V2 liveness of the stable server")
@router.get("/v2/health/ready", summary="V2 readiness of the stable server")
@router.get("/v2/models/{model_name}", summary="V2 model metadata")
@router.get("/v2/models/{model_name}/ready", summary="V2 model readiness")
async def v2_read(deployment_id: uuid.UUID, request: Request) -> Response:
    # Everything after /deployments/{id}, however the client spelled the id.
    path = "/" + request.url.path.split("/", 3)[3]
    return await _forward(request, deployment_id, path, with_body=False)


@router.get("/shadow", response_model=list[ShadowStatsRead], summary="Shadow comparisons seen by this gateway")
async def shadow_stats(deployment_id: uuid.UUID, request: Request) -> list[ShadowStatsRead]:
    gateway = _gateway(request)
    # Same authorization as serving: whoever may call the deployment may see how its shadow compares.
    await gateway.authorize_deployment(deployment_id, request.headers.get("authorization"))
    return [
        ShadowStatsRead(model_version_id=version_id, exact_match_rate=snapshot.exact_match_rate, **asdict(snapshot))
        for version_id, snapshot in gateway.shadow_stats(deployment_id).items()
    ]
