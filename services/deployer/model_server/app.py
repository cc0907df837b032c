"""The model server's HTTP surface: MLflow's scoring protocol and the Open Inference Protocol (V2)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any, TypeVar

import mlflow
import orjson
import pandas as pd
from fastapi import FastAPI, Request, Response
from mlflow.pyfunc import PyFuncModel
from mlflow.types import Schema
from starlette.concurrency import run_in_threadpool

from services.deployer.model_server import (
    BATCHING_HEADER,
    PID_HEADER,
    open_inference,
    parse_batching_header,
    scoring,
)
from services.deployer.model_server.batching import Batcher

JSON = "application/json"

T = TypeVar("T")


def create_app(model: PyFuncModel, name: str, version: str, request_timeout_s: float = 60.0) -> FastAPI:
    app = FastAPI(title=f"tessera model server: {name} v{version}", docs_url=None, redoc_url=None)
    input_schema = model.metadata.get_input_schema()
    signature = model.metadata.signature
    # The same (private) flag `mlflow models serve` reads to decide whether to parse inputs itself.
    typed_inputs = bool(getattr(signature, "_is_signature_from_type_hint", False))
    pid_headers = {PID_HEADER: str(os.getpid())}
    ready_body = orjson.dumps({"name": name, "ready": True})
    metadata_body = orjson.dumps(open_inference.model_metadata(name, version, signature))

    async def in_thread(func: Callable[..., T], *args: Any) -> T:
        # Prediction runs off the event loop so health checks answer while a slow model works.
        return await asyncio.wait_for(run_in_threadpool(func, *args), timeout=request_timeout_s)

    async def ping() -> Response:
        return Response(content="\n", media_type=JSON, headers=pid_headers)

    def predict_frame(frame: pd.DataFrame) -> Any:
        return scoring.predict(model, scoring.ScoringRequest(frame, None))

    # One batcher per batching setting asked for (in practice one: the deployment's).
    batchers: dict[str, Batcher | None] = {}

    def batcher_for(setting: str) -> Batcher | None:
        if setting not in batchers:
            parsed = parse_batching_header(setting)
            batchers[setting] = Batcher(predict_frame, in_thread, *parsed) if parsed else None
        return batchers[setting]

    async def score_batched(body: bytes, content_type: str | None, batcher: Batcher) -> bytes:
        # Parsed and checked alone, so a bad request is refused before it could join a batch; on the event
        # loop, as a thread hop per request would cost more than parsing a request small enough to batch.
        request = _checked_request(body, content_type, input_schema, typed_inputs)
        if request.params is not None or not isinstance(request.data, pd.DataFrame):
            predictions = await in_thread(scoring.predict, model, request)
        else:
            predictions = await asyncio.wait_for(batcher.predict(request.data), timeout=request_timeout_s)
        return scoring.predictions_response(predictions)

    app.get("/ping")(ping)
    app.get("/health")(ping)

    @app.get("/version")
    async def version_endpoint() -> Response:
        return Response(content=mlflow.__version__, media_type=JSON)

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        body = await request.body()
        content_type = request.headers.get("content-type")
        setting = request.headers.get(BATCHING_HEADER)
        batcher = batcher_for(setting) if setting is not None and not typed_inputs else None
        try:
            if batcher is not None:
                payload = await score_batched(body, content_type, batcher)
            else:
                payload = await in_thread(_score, model, body, content_type, input_schema, typed_inputs)
        except scoring.ScoringError as exc:
            return Response(content=exc.to_json(), status_code=exc.status_code, media_type=JSON)
        except TimeoutError:
            return Response(content="Request processing time exceeded limit", status_code=504, media_type=JSON)
        return Response(content=payload, media_type=JSON)

    @app.get("/v2")
    async def server_metadata() -> Response:
        return Response(
            content=orjson.dumps({"name": "tessera-model-server", "version": mlflow.__version__, "extensions": []}),
            media_type=JSON,
        )

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(content=b'{"live":true}', media_type=JSON)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(content=b'{"ready":true}', media_type=JSON)

    def unknown_model(requested: str) -> Response:
        error = open_inference.InferenceError(
            404, f"model '{requested}' is not served here; this server serves '{name}'"
        )
        return Response(content=error.to_json(), status_code=404, media_type=JSON)

    @app.get("/v2/models/{model_name}/ready")
    @app.get("/v2/models/{model_name}/versions/{model_version}/ready")
    async def model_ready(model_name: str, model_version: str | None = None) -> Response:
        if model_name != name or model_version not in (None, version):
            return unknown_model(model_name)
        return Response(content=ready_body, media_type=JSON)

    @app.get("/v2/models/{model_name}")
    @app.get("/v2/models/{model_name}/versions/{model_version}")
    async def model_metadata(model_name: str, model_version: str | None = None) -> Response:
        if model_name != name or model_version not in (None, version):
            return unknown_model(model_name)
        return Response(content=metadata_body, media_type=JSON)

    @app.post("/v2/models/{model_name}/infer")
    @app.post("/v2/models/{model_name}/versions/{model_version}/infer")
    async def model_infer(model_name: str, request: Request, model_version: str | None = None) -> Response:
        if model_name != name or model_version not in (None, version):
            return unknown_model(model_name)
        body = await request.body()
        try:
            payload = await in_thread(_infer, model, name, version, body)
        except open_inference.InferenceError as exc:
            return Response(content=exc.to_json(), status_code=exc.status_code, media_type=JSON)
        except TimeoutError:
            error = open_inference.InferenceError(504, "Request processing time exceeded limit")
            return Response(content=error.to_json(), status_code=504, media_type=JSON)
        return Response(content=payload, media_type=JSON)

    return app


def _checked_request(
    body: bytes, content_type: str | None, input_schema: Schema | None, typed_inputs: bool
) -> scoring.ScoringRequest:
    request = scoring.parse_request(body, content_type, input_schema, typed_inputs=typed_inputs)
    if not typed_inputs:
        # Type-hinted models validate their own inputs (MLflow hands them the raw `inputs`).
        scoring.check_input(request, input_schema)
    return request


def _score(
    model: PyFuncModel, body: bytes, content_type: str | None, input_schema: Schema | None, typed_inputs: bool
) -> bytes:
    request = _checked_request(body, content_type, input_schema, typed_inputs)
    return scoring.predictions_response(scoring.predict(model, request))


def _infer(model: PyFuncModel, name: str, version: str, body: bytes) -> bytes:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise open_inference.InferenceError(400, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(request, dict):
        raise open_inference.InferenceError(400, "request body must be a JSON object")
    return open_inference.infer(model, name, version, request)
