"""The FastAPI application factory every service uses: errors, request ids, logs, health, metrics."""

from __future__ import annotations

import mimetypes
import posixpath
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import structlog
from celery import current_app
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select, text
from sqlalchemy.exc import DataError, IntegrityError
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.core import browser_session, integrity, quarantine
from shared.core.auth import Authenticator
from shared.core.context import RequestContext, reset_request, set_request
from shared.core.docs import install_docs, install_openapi
from shared.core.errors import TesseraError
from shared.core.hot_routes import HotApp
from shared.core.logging import configure_logging
from shared.core.metrics import REGISTRY
from shared.core.settings import Settings, get_settings
from shared.db.models import Delivery
from shared.db.session import Database, get_database

log = structlog.get_logger("tessera.http")

# The MLflow-compatible APIs answer bad input with 400 as MLflow does; native APIs use 422 as FastAPI
# documents in their OpenAPI schemas.
MLFLOW_PREFIXES = ("/api/2.0/", "/api/3.0/", "/ajax-api/")
_HTTP_CODES = {
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "ENDPOINT_NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}

REQUESTS = Counter(
    "tessera_http_requests_total", "HTTP requests", ["service", "method", "route", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "tessera_http_request_duration_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def _error(
    status: int, code: str, message: str, details: dict | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"error_code": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TesseraError)
    async def _tessera_error(_request: Request, exc: TesseraError) -> JSONResponse:
        return _error(exc.status_code, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
        reason = str(first["msg"]).removeprefix("Value error, ")
        message = f"Invalid value for {'.'.join(first['loc'][1:]) or 'request'}: {reason}"
        status = 400 if request.url.path.startswith(MLFLOW_PREFIXES) else 422
        return _error(status, "INVALID_PARAMETER_VALUE", message, {"errors": problems})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "BAD_REQUEST" if exc.status_code < 500 else "INTERNAL_ERROR")
        # Keeps what HTTP requires with some errors: `Allow` on a 405, `WWW-Authenticate` on a 401.
        return _error(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(DataError)
    async def _data_error(_request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value (NUL in text, out of range, too long): bad input, not a server fault.
        log.warning("http.data_error", error=str(exc.orig))
        return _error(400, "INVALID_PARAMETER_VALUE", "A value was refused by the database (e.g. a NUL character)")

    @app.exception_handler(IntegrityError)
    async def _integrity_error(_request: Request, exc: IntegrityError) -> JSONResponse:
        # Two concurrent writers can both pass a duplicate check; the constraint decides, and the loser
        # hears what the check would have told it.
        log.info("http.integrity_error", error=str(exc.orig))
        error = integrity.error_for(exc)
        return _error(error.status_code, error.code, error.message)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("http.unhandled_error", error=str(exc))
        return _error(500, "INTERNAL_ERROR", "Internal error; see the server log for the request id")


def artifact_download(chunks: Iterable[bytes], path: str) -> StreamingResponse:
    """A stored artifact as MLflow's server sends one to its UI: an attachment that is never sniffed, so an
    HTML or SVG file a client logged cannot run scripts on Tessera's origin."""
    name = posixpath.basename(path).replace('"', "")
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "X-Content-Type-Options": "nosniff"}
    return StreamingResponse(chunks, media_type=mimetypes.guess_type(name)[0] or "text/plain", headers=headers)


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class RequestContextMiddleware:
    """Request id, client facts for the audit trail, body-size limit, and Prometheus timings.

    A plain ASGI middleware rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware
    re-wraps every request and response in extra tasks and streams, which costs milliseconds on hot
    paths (metric logging, the deployer's gateway).
    """

    def __init__(self, app: ASGIApp, *, service: str, max_body: int) -> None:
        self.app = app
        self.service = service
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        # A caller's id is kept when it is a plain token (it ends up in logs, audit rows and prediction logs).
        request_id = headers.get("x-request-id", "")
        if not _REQUEST_ID.fullmatch(request_id):
            request_id = uuid.uuid4().hex
        client = scope.get("client")
        token = set_request(
            RequestContext(
                request_id=request_id,
                method=scope["method"],
                path=scope["path"],
                ip_address=client[0] if client else None,
                user_agent=headers.get("user-agent"),
            )
        )
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("x-request-id", request_id)
            await send(message)

        try:
            length = headers.get("content-length")
            if length and length.isdigit() and int(length) > self.max_body:
                response = _error(413, "PAYLOAD_TOO_LARGE", f"Request body over {self.max_body} bytes")
                await response(scope, receive, send_with_request_id)
            else:
                await self.app(scope, receive, send_with_request_id)
        finally:
            reset_request(token)
            structlog.contextvars.unbind_contextvars("request_id")
            template = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(self.service, scope["method"], template, str(status)).inc()
            LATENCY.labels(self.service, scope["method"], template).observe(time.perf_counter() - started)


def _ops_router(service: str) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness and dependencies (database, broker)")
    def healthz(request: Request) -> JSONResponse:
        settings: Settings = request.app.state.settings
        checks = {"database": _check_database(request), "broker": _check_broker(settings)}
        healthy = all(c == "ok" for c in checks.values())
        return JSONResponse(
            {"status": "ok" if healthy else "degraded", "service": service, "checks": checks},
            status_code=200 if healthy else 503,
        )

    @router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    def metrics(request: Request) -> PlainTextResponse:
        stored = CollectorRegistry()
        stored.register(_StoredCounts(request.app.state.db))
        return PlainTextResponse(generate_latest(REGISTRY) + generate_latest(stored), media_type=CONTENT_TYPE_LATEST)

    return router


class _StoredCounts:
    """Counts that live in the database, read at each scrape (workers in other processes change them):
    quarantined and retrying items of the batch consumers, and notifications dropped for a disabled
    channel."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        dead = GaugeMetricFamily(
            "tessera_dead_letters",
            "Items a batch consumer failed on, by consumer and state",
            labels=["consumer", "state"],
        )
        dropped = GaugeMetricFamily(
            "tessera_notifier_deliveries_dropped", "Notifications recorded as dropped: their channel was disabled"
        )
        try:
            with self.db.session_scope() as session:
                for consumer, state, count in quarantine.counts(session):
                    dead.add_metric([consumer, state], count)
                dropped.add_metric([], session.scalar(select(func.count()).where(Delivery.state == "dropped")) or 0)
        except Exception as exc:  # a scrape still answers with what the process knows
            log.warning("metrics.stored_counts_failed", error=str(exc))
            return
        yield dead
        yield dropped


def _check_database(request: Request) -> str:
    try:
        with request.app.state.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


def _check_broker(settings: Settings) -> str:
    try:
        # The process's Celery app (tessera.worker), which also sends the outbox relay's nudges.
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


def build_app(
    settings: Settings | None = None,
    *,
    title: str,
    service: str,
    routers: Iterable[APIRouter],
    serving_routers: Iterable[APIRouter] = (),
    description: str = "",
) -> FastAPI:
    """`serving_routers` are matched before every other route (Starlette tries routes in order), and their
    raw routes (the deployer's gateway) before the middleware too (shared.core.hot_routes): their requests
    would otherwise pay for the middleware stack and for matching every route of every service."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)
    app = HotApp(
        title=title,
        description=description,
        version="0.1.0",
        openapi_url="/openapi.json",
        # Served by install_docs from installed files instead (FastAPI's own pages load a CDN).
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = get_database(settings.database_url, settings.sql_echo, settings.db_pool_size)
    app.state.authenticator = Authenticator(settings.jwt_secret, settings.api_key_touch_interval_s)
    _install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, service=service, max_body=settings.max_request_bytes)

    # The metric children of each (method, path or route template, status): a hot or raw route's paths are
    # few, and looking children up by labels costs more than counting.
    children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(method: str, path: str, status: int, seconds: float) -> None:
        key = (method, path, status)
        child = children.get(key)
        if child is None:
            child = children[key] = (
                REQUESTS.labels(service, method, path, str(status)),
                LATENCY.labels(service, method, path),
            )
        child[0].inc()
        child[1].observe(seconds)

    app.serve_hot_routes(max_body=settings.max_request_bytes, observe=observe)
    for router in serving_routers:
        app.include_router(router)
        app.serve_raw_routes(router.routes)
    app.include_router(_ops_router(service))
    app.include_router(browser_session.router)
    install_docs(app)
    install_openapi(app, bad_request_prefixes=MLFLOW_PREFIXES)
    for router in routers:
        app.include_router(router)
    return app
