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
revoked it, within IDENTITY_CACHE_TTL_S (5 s) in the others. Not every hot call leaves an audit row:
audit what changes state (see each handler).

The pool is opened with the app (`hot_pool_lifespan`, a router lifespan) on PostgreSQL only; elsewhere
(SQLite) every request takes the usual path. The app's middleware and error handlers still apply.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
import psycopg
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy.engine import make_url
from starlette.datastructures import State
from starlette.types import Message, Receive, Scope, Send

from shared.core.auth import Principal

_JSON_HEADERS = [(b"content-type", b"application/json")]


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
    params: dict[str, Any]  # the JSON body of a POST, the query parameters of a GET
    principal: Principal
    pool: HotPool
    state: State  # the app's (settings, authenticator, ...)

    def connection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection]:
        return self.pool.connection()


HotHandler = Callable[[HotRequest], Awaitable[bytes | None]]


class HotRoute(APIRoute):
    """A route whose requests try `hot` first (see the module's docstring)."""

    hot: HotHandler

    @classmethod
    def serving(cls, handler: HotHandler) -> type[HotRoute]:
        return type(f"Hot_{handler.__name__}", (cls,), {"hot": staticmethod(handler)})

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method not in (self.methods or ()):
            await super().handle(scope, receive, send)  # FastAPI's 405
            return
        body = b""
        if method == "POST":
            received = await read_body(receive)
            if received is None:
                return  # the client went away mid-upload: nobody to answer
            body = received
        request = _hot_request(scope, method, body)
        answer = await self.hot(request) if request is not None else None
        if answer is None:
            await super().handle(scope, _replay(body, receive), send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
        await send({"type": "http.response.body", "body": answer})


def _hot_request(scope: Scope, method: str, body: bytes) -> HotRequest | None:
    """The request as a hot handler sees it; None when only the usual endpoint can serve it."""
    pool = getattr(scope["app"].state, "hot_pool", None)
    authorization = next((value for name, value in scope["headers"] if name == b"authorization"), None)
    if pool is None or authorization is None:
        return None
    principal = scope["app"].state.authenticator.cached(authorization.decode("latin-1"))
    if principal is None:
        return None
    if method == "GET":
        return HotRequest(_query(scope), principal, pool, scope["app"].state)
    try:
        params = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        return None
    return HotRequest(params, principal, pool, scope["app"].state) if isinstance(params, dict) else None


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


async def read_body(receive: Receive) -> bytes | None:
    """The request body; None when the client went away before sending all of it."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
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
