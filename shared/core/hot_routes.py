"""Hot routes: calls made thousands of times a minute (a training loop's log calls, a UI's reads) served
straight from ASGI, still documented in OpenAPI and still answered by their usual endpoint when needed.

A hot route is an ordinary FastAPI route whose class is `HotRoute` and which names a `hot` handler:

    router.add_api_route(path, endpoint, methods=["POST"], route_class_override=HotRoute.serving(handler))

FastAPI documents the operation from `endpoint` as usual. A request first goes to `handler(request)`
with a `HotRequest`: the parsed JSON body (or query), the caller from the per-process identity cache
(shared.core.auth: no I/O), and `connection()`, an autocommit psycopg connection of a per-process async
pool (no thread-pool hop, no ORM session, no BEGIN/COMMIT round trips: one statement is one transaction,
and psycopg prepares a statement on a connection once it has run a few times). The handler returns the
response body (bytes, sent as JSON) when it served the call, or None to leave the request to the usual
endpoint, which then runs with the same body as if the hot handler had not been there.

So a hot handler serves only what it can prove will succeed, in one statement, and leaves everything
else — a caller or role not remembered, a cookie-authenticated browser, bad input, a missing or deleted
object, an error of any kind — to the usual endpoint, whose answers (error codes, audit row of a failure)
stay the only ones. A revoked key stops working as it does on the usual path: at once in the process that
revoked it, within IDENTITY_CACHE_TTL_S (5 s) in the others. A steady caller's remembered identity and
roles are read again in a worker thread shortly before they end (`Authenticator.refresh`), so their calls
do not fall to the usual path every 5 s. Not every hot call leaves an audit row:
audit what changes state (see each handler).

Once a hot route has served a path, `HotApp` (the app class of every service) hands that path's requests
to its handler before FastAPI's and Starlette's own layers, the middleware and the routing (`HotDispatch`,
which keeps the body-size limit, the `x-request-id` header and the request metrics); those layers cost as
much CPU as a hot call itself. The pool is opened with the app (`hot_pool_lifespan`, a router lifespan)
on PostgreSQL only; elsewhere (SQLite) every request takes the usual path.

A `RawRoute` (the deployer's serving routes) goes further: its requests are always its own, whatever they
carry, and it answers every one of them itself (`serve`: status, headers, body), errors included. `HotApp`
matches the paths of its raw routes (a prefix check, then the route's pattern) before anything else and
serves them the same way, without the middleware and routing, keeping the body-size limit, the
`x-request-id` header, the request context and the metrics; an exception becomes the answer the app's own
exception handler for it gives, as it would on the usual path.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
import psycopg
import structlog
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy.engine import make_url
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.core.auth import Principal
from shared.core.context import RequestContext, current_request, reset_request, set_request

_JSON_HEADERS = [(b"content-type", b"application/json")]
# Set on a request the hot handler has left: the route then serves it the usual way.
_TRIED = "tessera.hot_tried"
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_MAX_RAW_MATCHES = 4096

log = structlog.get_logger("tessera.http")


class HotPool:
    """Autocommit async psycopg connections of one process, opened on demand, at most `size` at once."""

    def __init__(self, conninfo: str, size: int) -> None:
        self.conninfo = conninfo
        self.idle: list[psycopg.AsyncConnection] = []
        self.slots = asyncio.Semaphore(size)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self.slots:
            conn = (
                self.idle.pop() if self.idle else await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
            )
            try:
                yield conn
            except BaseException:
                # A failed statement leaves an autocommit connection usable; a broken one is dropped.
                if conn.broken or conn.closed:
                    await conn.close()
                else:
                    self.idle.append(conn)
                raise
            self.idle.append(conn)

    async def close(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            await conn.close()


def _conninfo(database_url: str) -> str | None:
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def hot_pool_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Opens the app's hot pool; every service's hot router names it, the first one entered owns it."""
    if hasattr(app.state, "hot_pool"):
        yield
        return
    conninfo = _conninfo(app.state.db.url)
    app.state.hot_pool = HotPool(conninfo, app.state.settings.db_pool_size) if conninfo else None
    try:
        yield
    finally:
        pool, app.state.hot_pool = app.state.hot_pool, None
        if pool is not None:
            await pool.close()
        del app.state.hot_pool


@dataclass(slots=True)
class HotRequest:
    params: dict[str, Any]  # the JSON body of a POST (an object), the query parameters of a GET
    principal: Principal
    pool: HotPool
    state: State  # the app's (settings, authenticator, ...)
    context: RequestContext  # what an audit row says of the request
    headers: list[tuple[bytes, bytes]]  # as ASGI gives them: lower-case names
    items: list[Any] | None = None  # the JSON body of a POST that is an array (then `params` is empty)

    def connection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection]:
        return self.pool.connection()

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)


HotHandler = Callable[[HotRequest], Awaitable[bytes | None]]


class HotRoute(APIRoute):
    """A route whose requests try `hot` first (see the module's docstring)."""

    hot: HotHandler
    # Whether the handler takes a POST body that is a JSON array (`HotRequest.items`); else such a body
    # goes to the usual endpoint.
    array_body: bool = False

    @classmethod
    def serving(cls, handler: HotHandler, *, array_body: bool = False) -> type[HotRoute]:
        return type(f"Hot_{handler.__name__}", (cls,), {"hot": staticmethod(handler), "array_body": array_body})

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if scope.get(_TRIED) or method not in (self.methods or ()):
            await super().handle(scope, receive, send)  # FastAPI's 405, or what the hot handler left
            return
        dispatch: HotDispatch | None = getattr(scope["app"], "hot_dispatch", None)
        if dispatch is not None and not scope["path_params"]:
            # From now on this path is served before the app's middleware and routing.
            dispatch.routes[(method, scope["path"])] = self
        body = b""
        if method == "POST":
            received = await read_body(receive)
            if received is None:
                return  # the client went away mid-upload: nobody to answer
            body = received
        context = current_request() or _context(scope, uuid.uuid4().hex)
        try:
            answer = await _answer(self.hot, scope, body, context, self.array_body)
        except Exception:
            log.warning("hot_route.error_served_as_usual", path=scope["path"], exc_info=True)
            answer = None
        if answer is None:
            await super().handle(scope, _replay(body, receive), send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
        await send({"type": "http.response.body", "body": answer})


RawHeaders = list[tuple[bytes, bytes]]
RawAnswer = tuple[int, RawHeaders, bytes]  # status, headers (content-type and content-length included), body


class RawRoute(APIRoute):
    """A route that answers its requests itself, straight from ASGI (see the module's docstring): FastAPI
    documents it from its endpoint, which is never called. Put it in a serving router (matched first), so
    that serving its paths before the app's routing changes no answer."""

    async def serve(self, scope: Scope, body: bytes | None) -> RawAnswer:
        """The answer; `scope["path_params"]` holds the path's parameters, `body` is None for a GET."""
        raise NotImplementedError

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Reached through the whole app: a wrong method (FastAPI's 405), or an app that is not a HotApp.
        if scope["method"] not in (self.methods or ()):
            await super().handle(scope, receive, send)
            return
        body = None
        if scope["method"] == "POST":
            body = await read_body(receive)
            if body is None:
                return  # the client went away mid-upload: nobody to answer
        status, headers, content = await self.serve(scope, body)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


Observe = Callable[[str, str, int, float], None]  # (method, path or route template, status, seconds)


class HotDispatch:
    """What `HotApp` does with a request for a hot route's path (once the route has served that path):
    straight to the hot handler, without FastAPI's and Starlette's layers, middleware and routing, which
    cost as much CPU as a hot call itself. It keeps what the middleware gives every answer: the body-size
    limit, an `x-request-id` header, and the request's count and latency (`observe`). What the handler
    leaves, or any error, goes through the whole app as usual, its body replayed."""

    def __init__(self, app: ASGIApp, *, max_body: int, observe: Observe) -> None:
        self.app = app  # the whole app
        self.max_body = max_body
        self.observe = observe
        self.routes: dict[tuple[str, str], HotRoute] = {}
        # The raw routes by the literal start of their path ("/deployments/" for "/deployments/{id}/...").
        self.raw_routes: dict[str, list[RawRoute]] = {}
        # (method, path) -> what `raw_route` found for it: a deployment's requests repeat their paths.
        self._raw_matches: dict[tuple[str, str], tuple[RawRoute, dict[str, Any]] | None] = {}

    def add_raw_route(self, route: RawRoute) -> None:
        self.raw_routes.setdefault(route.path_format.partition("{")[0], []).append(route)
        self._raw_matches.clear()

    def raw_route(self, method: str, path: str) -> tuple[RawRoute, dict[str, Any]] | None:
        """The raw route serving a request, with the path's parameters (a copy: the scope's to change)."""
        key = (method, path)
        if key in self._raw_matches:
            found = self._raw_matches[key]
            return (found[0], dict(found[1])) if found is not None else None
        found = self._match_raw_route(method, path)
        if len(self._raw_matches) >= _MAX_RAW_MATCHES:  # paths come from callers: kept, not hoarded
            self._raw_matches.clear()
        self._raw_matches[key] = found
        return (found[0], dict(found[1])) if found is not None else None

    def _match_raw_route(self, method: str, path: str) -> tuple[RawRoute, dict[str, Any]] | None:
        for prefix, routes in self.raw_routes.items():
            if path.startswith(prefix):
                for route in routes:
                    match = route.path_regex.match(path)
                    if match is not None and method in (route.methods or ()):
                        convertors = route.param_convertors
                        return route, {key: convertors[key].convert(value) for key, value in match.groupdict().items()}
        return None

    async def serve_raw(
        self, route: RawRoute, path_params: dict[str, Any], scope: Scope, receive: Receive, send: Send
    ) -> None:
        started = time.perf_counter()
        request_id = length = user_agent = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value
            elif name == b"content-length":
                length = value
            elif name == b"user-agent":
                user_agent = value
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self.app(scope, receive, send)  # the app's answer to that (413)
            return
        if request_id is None or not _REQUEST_ID.fullmatch(request_id):
            request_id = _new_request_id()
        client = scope.get("client")
        context = RequestContext(
            request_id=request_id.decode(),
            method=scope["method"],
            path=scope["path"],
            ip_address=client[0] if client else None,
            user_agent=user_agent.decode("latin-1") if user_agent is not None else None,
        )
        scope["path_params"] = path_params
        token = set_request(context)
        structlog.contextvars.bind_contextvars(request_id=context.request_id)
        try:
            try:
                body = None
                if scope["method"] == "POST":
                    body = await read_body(receive, self.max_body)
                    if body is None:
                        return  # the client went away mid-upload: nobody to answer
                status, headers, content = await route.serve(scope, body)
            except Exception as exc:
                status, headers, content = await _error_answer(scope, receive, exc)
        finally:
            reset_request(token)
            structlog.contextvars.unbind_contextvars("request_id")
        headers.append((b"x-request-id", request_id))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})
        self.observe(scope["method"], route.path, status, time.perf_counter() - started)

    async def serve(self, route: HotRoute, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id, length = None, None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value
            elif name == b"content-length":
                length = value
        if request_id is None or not _REQUEST_ID.fullmatch(request_id):
            request_id = uuid.uuid4().hex.encode()
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self.app(scope, receive, send)
            return
        body = b""
        if scope["method"] == "POST":
            received = await read_body(receive)
            if received is None:
                return
            body = received
        try:
            answer = await _answer(route.hot, scope, body, _context(scope, request_id.decode()), route.array_body)
        except Exception:
            log.warning("hot_route.error_served_as_usual", path=scope["path"], exc_info=True)
            answer = None
        if answer is None:
            scope[_TRIED] = True
            await self.app(scope, _replay(body, receive), send)
            return
        headers = [*_JSON_HEADERS, (b"x-request-id", request_id)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
        self.observe(scope["method"], scope["path"], 200, time.perf_counter() - started)


class HotApp(FastAPI):
    """A FastAPI app that hands the requests of its raw routes, and of its hot routes' paths, to
    `hot_dispatch` first."""

    hot_dispatch: HotDispatch | None = None

    def serve_hot_routes(self, *, max_body: int, observe: Observe) -> None:
        self.hot_dispatch = HotDispatch(super().__call__, max_body=max_body, observe=observe)

    def serve_raw_routes(self, routes: Iterable[BaseRoute]) -> None:
        """Serve the raw routes among `routes` before everything else: those of a router the app includes
        first and without a prefix (their paths are the app's)."""
        assert self.hot_dispatch is not None, "serve_hot_routes first"
        for route in routes:
            if isinstance(route, RawRoute):
                self.hot_dispatch.add_raw_route(route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        dispatch = self.hot_dispatch
        if dispatch is not None and scope["type"] == "http":
            path = scope["path"]
            route = dispatch.routes.get((scope["method"], path))
            if route is not None:
                scope["app"] = self
                await dispatch.serve(route, scope, receive, send)
                return
            if dispatch.raw_routes and (raw := dispatch.raw_route(scope["method"], path)) is not None:
                scope["app"] = self
                await dispatch.serve_raw(raw[0], raw[1], scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class PayloadTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"Request body over {limit} bytes")


async def _error_answer(scope: Scope, receive: Receive, exc: Exception) -> RawAnswer:
    """What the app's exception handler for `exc` answers (the usual path's error bodies), as a RawAnswer."""
    app = scope["app"]
    if isinstance(exc, PayloadTooLarge):
        body = orjson.dumps({"error_code": "PAYLOAD_TOO_LARGE", "message": str(exc)})
        return 413, [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())], body
    handler = next((app.exception_handlers[kind] for kind in type(exc).__mro__ if kind in app.exception_handlers), None)
    if handler is None:
        raise exc
    response = handler(Request(scope, receive), exc)
    if inspect.isawaitable(response):
        response = await response
    assert isinstance(response, Response)
    return response.status_code, list(response.raw_headers), bytes(response.body)


async def _answer(
    handler: HotHandler, scope: Scope, body: bytes, context: RequestContext, array_body: bool = False
) -> bytes | None:
    request = _hot_request(scope, scope["method"], body, context, array_body)
    return await handler(request) if request is not None else None


def _new_request_id() -> bytes:
    """32 random hex digits, as uuid4().hex gives, without its system call: a request id needs to be
    unique, not secret (callers choose their own)."""
    return b"%032x" % random.getrandbits(128)


def _context(scope: Scope, request_id: str) -> RequestContext:
    client = scope.get("client")
    user_agent = next((value for name, value in scope["headers"] if name == b"user-agent"), None)
    return RequestContext(
        request_id=request_id,
        method=scope["method"],
        path=scope["path"],
        ip_address=client[0] if client else None,
        user_agent=user_agent.decode("latin-1") if user_agent is not None else None,
    )


def _hot_request(
    scope: Scope, method: str, body: bytes, context: RequestContext, array_body: bool = False
) -> HotRequest | None:
    """The request as a hot handler sees it; None when only the usual endpoint can serve it."""
    state = scope["app"].state
    pool = getattr(state, "hot_pool", None)
    authorization = next((value for name, value in scope["headers"] if name == b"authorization"), None)
    if pool is None or authorization is None:
        return None
    credential = authorization.decode("latin-1")
    principal = state.authenticator.cached(credential)
    if principal is None:
        return None
    if state.authenticator.expiring(credential):
        _refresh_soon(state, credential)
    headers = scope["headers"]
    if method == "GET":
        return HotRequest(_query(scope), principal, pool, state, context, headers)
    try:
        params = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        return None
    if isinstance(params, list) and array_body:
        return HotRequest({}, principal, pool, state, context, headers, items=params)
    return HotRequest(params, principal, pool, state, context, headers) if isinstance(params, dict) else None


# Credentials being read again in a worker thread (at most one refresh per credential at a time).
_refreshing: set[str] = set()


def _refresh_soon(state: State, credential: str) -> None:
    """Has the caller and their remembered roles read again in the default executor's thread
    (`Authenticator.refresh`), so that this request and the next ones stay on the hot path while the
    remembered entries are renewed before they end."""
    if credential in _refreshing:
        return
    _refreshing.add(credential)

    def refresh() -> None:
        try:
            with state.db.session_scope() as session:
                state.authenticator.refresh(session, credential)
        except Exception:
            log.warning("hot_route.identity_refresh_failed", exc_info=True)
        finally:
            _refreshing.discard(credential)

    asyncio.get_running_loop().run_in_executor(None, refresh)


def _query(scope: Scope) -> dict[str, Any]:
    """GET parameters as the mlflow client sends them: scalars, repeated keys for lists."""
    params: dict[str, Any] = {}
    for key, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
        if key in params:
            previous = params[key]
            params[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            params[key] = value
    return params


async def read_body(receive: Receive, limit: int | None = None) -> bytes | None:
    """The request body; None when the client went away before sending all of it. PayloadTooLarge past
    `limit` bytes (a body sent without a length: one with a length over the limit is refused before)."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for the usual endpoint: the body already read, then whatever the client sends next."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
