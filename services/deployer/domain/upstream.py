"""The gateway's HTTP client for model servers: keep-alive HTTP/1.1 on asyncio, responses parsed by httptools.

Hand-written rather than a general client because the gateway pays for it on every request it forwards, and
a general client's per-request machinery costs more than the rest of the gateway: measured with callgrind on
the gateway process against a trivial upstream, aiohttp's `session.request` cost about 0.3 M instructions per
request and this client about 0.05 M (httpx about four times aiohttp). It does only what the gateway needs:
plain `http://` URLs, one request at a time per connection, connections kept per host and reused newest
first, a total timeout per request and a connect timeout. The HTTP parsing is httptools' (llhttp, the parser
uvicorn serves with), so chunked and content-length bodies and keep-alive rules are a real parser's.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import quote

import httptools

# Below uvicorn's default keep-alive timeout (5 s), so a model server never closes an idle connection
# just as the gateway reuses it.
KEEPALIVE_S = 4.0
# Characters a request target may carry as they are; anything else (a decoded space, %, CR/LF, non-ASCII in
# a V2 model name) is percent-encoded, so what the client sent can never split the request line.
_UNSAFE_IN_PATH = re.compile(r"[^A-Za-z0-9/._~:@!$&'()*+,;=-]")
_UNSAFE_IN_HEADER = re.compile(r"[\r\n\0]")
# Distinct URLs whose request line is kept ready (replicas x paths; V2 model names come from callers).
_MAX_TARGETS = 1024


class UpstreamError(Exception):
    """The upstream did not answer: refused, reset, timed out, or sent a broken response. `retryable`: the
    request may go to another replica (not after a timeout, which would only double the wait)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class UpstreamAnswer:
    status_code: int
    content: bytes
    content_type: str | None


class UpstreamClient(Protocol):
    async def request(
        self, method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> UpstreamAnswer: ...


class _Stale(Exception):
    """A reused connection closed before any byte of the answer: the server had dropped it while idle."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time; httptools calls the `on_*` methods."""

    def __init__(self, host: _Host) -> None:
        self.host = host
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[UpstreamAnswer] | None = None
        self.chunks: list[bytes] = []
        self.content_type: bytes | None = None
        # The answer says where its body ends (content-length or chunked); otherwise it ends with the connection.
        self.delimited = False
        self.headers_done = False
        self.received = False
        self.reused = False
        self.closed = False
        self.idle_since = 0.0

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's transports are not subclasses)

    def data_received(self, data: bytes) -> None:
        if self.answer is None:  # nothing asked: a server talking out of turn
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.host.forget(self)
        if self.answer is None or self.answer.done():
            return
        if self.headers_done and not self.delimited:
            self._complete(keep_alive=False)  # a body that ends with the connection
        elif not self.received and self.reused:
            self.answer.set_exception(_Stale())
        else:
            reason = f": {exc}" if exc else ""
            self._fail(UpstreamError(f"connection closed before the whole answer{reason}"))

    # --- httptools

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-type":
            self.content_type = value
        elif lowered in (b"content-length", b"transfer-encoding"):
            self.delimited = True

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:  # an interim answer (1xx): the real one follows
            self.chunks, self.content_type, self.delimited, self.headers_done = [], None, False, False
            return
        self._complete(keep_alive=self.parser.should_keep_alive())

    # --- the request

    def send(self, data: list[bytes], loop: asyncio.AbstractEventLoop) -> asyncio.Future[UpstreamAnswer]:
        assert self.transport is not None
        self.answer = loop.create_future()
        self.transport.writelines(data)
        return self.answer

    def _complete(self, *, keep_alive: bool) -> None:
        answer, chunks = self.answer, self.chunks
        content_type = self.content_type
        self.answer, self.chunks, self.content_type = None, [], None
        self.delimited = self.headers_done = self.received = False
        if not keep_alive:
            self.close()
        if answer is not None and not answer.done():
            content = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            status = self.parser.get_status_code()
            answer.set_result(
                UpstreamAnswer(status, content, content_type.decode("latin-1") if content_type is not None else None)
            )

    def _fail(self, error: BaseException) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(error)

    def timed_out(self) -> None:
        self._fail(UpstreamError("TimeoutError: no answer in time", retryable=False))
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.host.forget(self)
            if self.transport is not None:
                self.transport.close()


class _Host:
    """The idle connections to one host:port, newest last."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: deque[_Connection] = deque()

    def forget(self, connection: _Connection) -> None:
        with contextlib.suppress(ValueError):  # (not idle)
            self.idle.remove(connection)


@dataclass(frozen=True, slots=True)
class _Target:
    host: _Host
    # b"<path> HTTP/1.1\r\nhost: <host>:<port>\r\n": the request line after the method, and the Host header.
    line: bytes


class HttpUpstreamClient:
    """One connection pool for the app's lifetime; create it inside the running event loop."""

    def __init__(
        self,
        *,
        max_connections: int = 512,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 2.0,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self._loop = asyncio.get_running_loop()
        self._hosts: dict[tuple[str, int], _Host] = {}
        self._targets: dict[str, _Target] = {}
        self._in_use = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def request(
        self, method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> UpstreamAnswer:
        target = self._targets.get(url) or self._target(url)
        lines = [method.encode("latin-1"), b" ", target.line]
        if headers:
            for name, value in headers.items():
                if _UNSAFE_IN_HEADER.search(value):
                    raise ValueError(f"header {name!r} carries a line break")
                lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        if body is not None:
            lines.append(b"content-length: %d\r\n" % len(body))
        lines.append(b"\r\n")
        data = [b"".join(lines), body] if body else [b"".join(lines)]
        if self._in_use >= self.max_connections:
            await self._wait_for_a_connection()
        self._in_use += 1
        try:
            try:
                return await self._exchange(target.host, data, reuse=True)
            except _Stale:
                # The server dropped the connection while it was idle; the request never reached it.
                return await self._exchange(target.host, data, reuse=False)
        finally:
            self._in_use -= 1
            while self._waiting:
                waiter = self._waiting.popleft()
                if not waiter.done():  # (a waiter whose caller gave up is skipped)
                    waiter.set_result(None)
                    break

    async def _exchange(self, host: _Host, data: list[bytes], *, reuse: bool) -> UpstreamAnswer:
        connection = self._idle(host) if reuse else None
        if connection is None:
            connection = await self._connect(host)
        answer = connection.send(data, self._loop)
        deadline = self._loop.call_later(self.timeout_s, connection.timed_out)
        try:
            result = await answer
        except BaseException:
            # Timed out, broken, or the caller gave up (cancelled): the connection's state is unknown.
            connection.close()
            raise
        finally:
            deadline.cancel()
        if not connection.closed:
            if self._closed:
                connection.close()
            else:
                connection.idle_since = time.monotonic()
                connection.reused = True
                host.idle.append(connection)
        return result

    def _idle(self, host: _Host) -> _Connection | None:
        idle = host.idle
        while idle:
            connection = idle.pop()
            if not connection.closed and time.monotonic() - connection.idle_since < self.keepalive_s:
                return connection
            connection.close()
        return None

    async def _connect(self, host: _Host) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, connection = await self._loop.create_connection(lambda: _Connection(host), host.host, host.port)
        except TimeoutError as exc:
            raise UpstreamError(f"TimeoutError: no connection to {host.host}:{host.port} in time") from exc
        except OSError as exc:
            raise UpstreamError(f"{type(exc).__name__}: {exc}") from exc
        return connection

    async def _wait_for_a_connection(self) -> None:
        while self._in_use >= self.max_connections:
            waiter = self._loop.create_future()
            self._waiting.append(waiter)
            await waiter

    def _target(self, url: str) -> _Target:
        """What a URL's requests start with. Everything after the host is the path, as given (the gateway's
        paths are decoded, so `?` or `#` in a V2 model name are part of it and get percent-encoded)."""
        scheme, _, rest = url.partition("://")
        netloc, _, path = rest.partition("/")
        name, _, port = netloc.rpartition(":")
        if scheme != "http" or not name or not port.isdigit():
            raise ValueError(f"only http://host:port URLs are served: {url!r}")
        key = (name.strip("[]"), int(port))
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host(*key)
        path = "/" + path
        if _UNSAFE_IN_PATH.search(path):
            path = quote(path, safe="/._~:@!$&'()*+,;=-")
        target = _Target(host, f"{path} HTTP/1.1\r\nhost: {netloc}\r\n".encode("latin-1"))
        if len(self._targets) >= _MAX_TARGETS:
            self._targets.clear()
        self._targets[url] = target
        return target

    async def aclose(self) -> None:
        """Close the idle connections; those in use close when their answer arrives."""
        self._closed = True
        for host in self._hosts.values():
            while host.idle:
                host.idle.pop().close()
