"""The gateway's HTTP client for model servers, against real HTTP servers on loopback (asyncio servers that
answer as the test needs: keep-alive, chunked, slow, dying, closing)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from services.deployer.domain.upstream import HttpUpstreamClient, UpstreamError

JSON = {"content-type": "application/json"}
Handler = Callable[[bytes, bytes, asyncio.StreamWriter], Awaitable[bool]]


class Server:
    """An HTTP/1.1 server whose `handler(head, body, writer)` answers each request; it returns False to close
    the connection. Counts connections and keeps the request heads it read."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.heads.append(head)
                lines = head.lower().split(b"\r\n")
                length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length")), 0)
                body = await reader.readexactly(length)
                if not await self.handler(head, body, writer):
                    return
        finally:
            self.open -= 1
            writer.close()


def answer(status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    head = b"HTTP/1.1 %d X\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n" % (status, content_type, len(body))
    return head + body


async def echo(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(answer(200, body or b"{}"))
    return True


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def test_one_connection_is_kept_alive_and_reused_for_sequential_requests():
    async def test() -> None:
        async with Server(echo) as server:
            client = HttpUpstreamClient()
            for index in range(20):
                body = b'{"n": %d}' % index
                reply = await client.request("POST", f"{server.url}/invocations", body, JSON)
                assert (reply.status_code, reply.content, reply.content_type) == (200, body, "application/json")
            await client.aclose()
        assert server.connections == 1
        first = server.heads[0].decode()
        assert first.startswith("POST /invocations HTTP/1.1\r\n")
        assert "content-type: application/json\r\n" in first and "content-length: 8\r\n" in first

    run(test)


def test_a_connection_the_server_closed_while_idle_is_replaced_without_failing_the_request():
    async def close_after_answer(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        # Says keep-alive, then drops the connection (as a server whose keep-alive timeout ran out would).
        writer.write(answer(200, b"{}"))
        await writer.drain()
        return False

    async def test() -> None:
        async with Server(close_after_answer) as server:
            client = HttpUpstreamClient()
            for _ in range(3):
                assert (await client.request("GET", f"{server.url}/ping")).status_code == 200
                await asyncio.sleep(0.05)  # the close reaches the client while the connection is idle
            await client.aclose()
        assert server.connections == 3

    run(test)


def test_a_server_dying_mid_request_is_an_error_another_replica_may_take():
    async def die(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"predic')  # then the process is gone
        await writer.drain()
        return False

    async def test() -> None:
        async with Server(die) as server:
            client = HttpUpstreamClient()
            with pytest.raises(UpstreamError, match="closed before the whole answer") as failed:
                await client.request("POST", f"{server.url}/invocations", b"{}")
            assert failed.value.retryable
            await client.aclose()

    run(test)


def test_a_refused_connection_is_an_error_another_replica_may_take():
    async def test() -> None:
        async with Server(echo) as server:
            url = server.url
        client = HttpUpstreamClient()
        with pytest.raises(UpstreamError) as failed:
            await client.request("POST", f"{url}/invocations", b"{}")
        assert failed.value.retryable
        await client.aclose()

    run(test)


def test_chunked_and_large_bodies_arrive_whole():
    big = bytes(range(256)) * 20_000  # 5 MB

    async def chunked(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for start in range(0, len(body), 300_000):
            piece = body[start : start + 300_000]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        return True

    async def test() -> None:
        async with Server(chunked) as server:
            client = HttpUpstreamClient()
            for _ in range(2):
                reply = await client.request("POST", f"{server.url}/invocations", big)
                assert reply.content == big and reply.content_type == "application/octet-stream"
            await client.aclose()
        assert server.connections == 1

    run(test)


def test_a_body_that_ends_with_the_connection_is_read_to_its_end():
    async def until_close(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n")
        writer.write(b'{"predictions": [1]}')
        await writer.drain()
        return False

    async def test() -> None:
        async with Server(until_close) as server:
            client = HttpUpstreamClient()
            for _ in range(2):
                reply = await client.request("POST", f"{server.url}/invocations", b"{}")
                assert reply.content == b'{"predictions": [1]}'
            await client.aclose()
        assert server.connections == 2

    run(test)


@pytest.mark.parametrize("status", [400, 404, 500, 503])
def test_error_answers_pass_through_with_their_bodies_on_a_connection_kept_alive(status):
    body = b'{"error_code": "BAD_REQUEST", "message": "no"}'

    async def refuse(head: bytes, _: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(status, body))
        return True

    async def test() -> None:
        async with Server(refuse) as server:
            client = HttpUpstreamClient()
            for _ in range(2):
                reply = await client.request("POST", f"{server.url}/invocations", b"{}")
                assert (reply.status_code, reply.content, reply.content_type) == (status, body, "application/json")
            await client.aclose()
        assert server.connections == 1

    run(test)


def test_no_answer_in_time_is_a_timeout_not_retried_and_the_connection_is_dropped():
    async def never(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if b"/slow" in head:
            await asyncio.sleep(5)
            return False
        writer.write(answer(200, b"{}"))
        return True

    async def test() -> None:
        async with Server(never) as server:
            client = HttpUpstreamClient(timeout_s=0.2)
            assert (await client.request("GET", f"{server.url}/fast")).status_code == 200
            started = asyncio.get_running_loop().time()
            with pytest.raises(UpstreamError, match="TimeoutError") as failed:
                await client.request("POST", f"{server.url}/slow", b"{}")
            assert not failed.value.retryable
            assert asyncio.get_running_loop().time() - started < 2
            # The timed-out connection is not reused: the next request opens another.
            assert (await client.request("GET", f"{server.url}/fast")).status_code == 200
            await client.aclose()
        assert server.connections == 2

    run(test)


def test_at_most_max_connections_are_open_and_the_others_wait_their_turn():
    async def slow(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.05)
        writer.write(answer(200, body))
        return True

    async def test() -> None:
        async with Server(slow) as server:
            client = HttpUpstreamClient(max_connections=2)
            replies = await asyncio.gather(
                *(client.request("POST", f"{server.url}/invocations", b"%d" % index) for index in range(8))
            )
            assert [reply.content for reply in replies] == [b"%d" % index for index in range(8)]
            await client.aclose()
        assert server.most_open == 2

    run(test)


def test_a_path_is_sent_percent_encoded_so_it_cannot_split_the_request_line():
    async def test() -> None:
        async with Server(echo) as server:
            client = HttpUpstreamClient()
            await client.request("GET", f"{server.url}/v2/models/a b?\r\nx: y/ready")
            await client.aclose()
        assert server.heads[0].startswith(b"GET /v2/models/a%20b%3F%0D%0Ax:%20y/ready HTTP/1.1\r\n")

    run(test)


def test_only_plain_http_urls_are_served():
    async def test() -> None:
        client = HttpUpstreamClient()
        with pytest.raises(ValueError, match="http://host:port"):
            await client.request("GET", "https://127.0.0.1:1/ping")

    run(test)
