"""SSRF guard and IP pinning of shared.core.outbound against a real local receiver."""

from __future__ import annotations

import contextlib
import gzip
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from shared.core import outbound
from shared.core.outbound import (
    MAX_BODY_BYTES,
    OutboundPolicy,
    OutboundRefused,
    is_public_address,
    post,
    run,
    vet_destination,
)
from tests.notifier.conftest import PINNED_HOSTNAME, Certificate, Receiver, Reply

LOOPBACK_ONLY = OutboundPolicy(allowlist=["127.0.0.1"])


class CountingResolver:
    """DNS for names only the test knows; `answers` are returned in turn (the last one repeats)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


def _post(url: str, policy: OutboundPolicy):
    return run(post(url, content=b"{}", headers={"content-type": "application/json"}, policy=policy))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/hook",
        "http://[::ffff:127.0.0.1]:{port}/hook",
        "http://localhost:{port}/hook",  # a name resolving (via /etc/hosts) to loopback
        "http://[::1]:{port}/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0:{port}/hook",
        "http://10.0.0.7/hook",
        "http://[fe80::1]/hook",
        "http://224.0.0.1/hook",
    ],
)
def test_non_public_destinations_are_refused_by_default(receiver: Receiver, url: str):
    with pytest.raises(OutboundRefused, match="not a public address"):
        _post(url.format(port=receiver.port), OutboundPolicy())
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("url", "allowlist"),
    [
        ("http://127.0.0.1:{port}/hook", ["127.0.0.1"]),
        ("http://[::ffff:127.0.0.1]:{port}/hook", ["127.0.0.1"]),
        ("http://localhost:{port}/hook", ["localhost"]),
        ("http://localhost:{port}/hook", ["127.0.0.0/8"]),
    ],
)
def test_allowlisted_destinations_are_reached(receiver: Receiver, url: str, allowlist: list[str]):
    response = _post(url.format(port=receiver.port), OutboundPolicy(allowlist=allowlist))
    assert response.status_code == 200
    assert response.body == b"ok"
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("::ffff:8.8.8.8", True),  # IPv4-mapped: judged by the IPv4 host it reaches
        ("64:ff9b::808:808", True),  # NAT64 likewise
        ("::ffff:127.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("64:ff9b::a00:1", False),
        ("2002:7f00:1::1", False),  # 6to4 wrapping loopback
        ("100.64.0.1", False),  # shared address space (CGNAT)
        ("192.0.2.1", False),  # documentation
        ("240.0.0.1", False),  # reserved
        ("::", False),
        ("ff02::1", False),
        ("fc00::1", False),
    ],
)
def test_public_address_classification(address: str, public: bool):
    assert is_public_address(ipaddress.ip_address(address)) is public


def test_allowlisted_metadata_address_passes_vetting():
    destination = vet_destination("http://169.254.169.254/x", OutboundPolicy(allowlist=["169.254.0.0/16"]))
    assert str(destination.ip) == "169.254.169.254"


def test_one_private_address_among_public_ones_refuses():
    resolver = CountingResolver(["93.184.215.14", "10.1.2.3"])
    with pytest.raises(OutboundRefused, match=r"10\.1\.2\.3"):
        vet_destination("https://hooks.example.com/x", OutboundPolicy(resolver=resolver))


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0177.0.0.1", "017700000001", "127.000.000.001", "0x7f.1"])
def test_numeric_ipv4_spellings_are_checked_and_sent_as_the_one_canonical_address(receiver: Receiver, host: str):
    """Checked and used in one form: what the allow-list admits is exactly what the request reaches."""
    url = f"http://{host}:{receiver.port}/hook"
    assert vet_destination(url, LOOPBACK_ONLY).url.raw_host == "127.0.0.1"
    assert _post(url, LOOPBACK_ONLY).status_code == 200
    refusal = r"127\.0\.0\.1 is not a public address; add it to TESSERA_OUTBOUND_ALLOWLIST"
    with pytest.raises(OutboundRefused, match=refusal):
        _post(url, OutboundPolicy())
    assert len(receiver.requests) == 1


def test_bad_urls_are_refused():
    for url in ("ftp://example.com/x", "http:///path-only", "file:///etc/passwd", "not a url", "http://1.2.3.256/"):
        with pytest.raises(OutboundRefused):
            vet_destination(url, OutboundPolicy())


def test_connection_goes_to_the_vetted_ip_with_original_host_header(receiver: Receiver):
    # First answer is vetted; a rebinding second answer would point at a private network.
    resolver = CountingResolver(["127.0.0.1"], ["10.0.0.1"])
    policy = OutboundPolicy(allowlist=["127.0.0.1"], resolver=resolver)
    response = _post(receiver.url(host=PINNED_HOSTNAME), policy)
    assert response.status_code == 200
    assert resolver.calls == [PINNED_HOSTNAME]
    assert receiver.requests[0].headers["host"] == f"{PINNED_HOSTNAME}:{receiver.port}"


def test_https_pins_ip_but_checks_certificate_and_sni_for_the_hostname(
    tls_receiver: Receiver, certificate: Certificate
):
    policy = OutboundPolicy(
        allowlist=["127.0.0.1"], resolver=CountingResolver(["127.0.0.1"]), verify=certificate.client_context()
    )
    response = _post(tls_receiver.url(host=PINNED_HOSTNAME), policy)
    assert response.status_code == 200
    assert tls_receiver.requests[0].headers["host"] == f"{PINNED_HOSTNAME}:{tls_receiver.port}"


def test_redirects_are_returned_not_followed(receiver: Receiver):
    receiver.script(Reply(302, headers={"location": f"http://localhost:{receiver.port}/internal"}))
    response = _post(receiver.url(), LOOPBACK_ONLY)
    assert response.status_code == 302
    assert [request.path for request in receiver.requests] == ["/hook"]


def test_proxy_environment_is_ignored(receiver: Receiver, monkeypatch: pytest.MonkeyPatch):
    # A proxy would resolve the name again, undoing the pinning.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    assert _post(receiver.url(), LOOPBACK_ONLY).status_code == 200


def test_response_body_is_capped(receiver: Receiver):
    receiver.script(Reply(500, body=b"x" * (MAX_BODY_BYTES * 4)))
    response = _post(receiver.url(), LOOPBACK_ONLY)
    assert response.status_code == 500
    assert len(response.body) == MAX_BODY_BYTES


def test_connections_are_kept_alive_but_never_shared_between_host_names(receiver: Receiver):
    other_name = "other-hooks.tessera.test"
    policy = OutboundPolicy(allowlist=["127.0.0.1"], resolver=CountingResolver(["127.0.0.1"]))
    for _ in range(3):
        assert _post(receiver.url(host=PINNED_HOSTNAME), policy).status_code == 200
    assert _post(receiver.url(host=other_name), policy).status_code == 200
    peers = [request.peer for request in receiver.requests]
    # One connection for the three sends to the first name; the same IP under another name gets its own
    # (its TLS certificate and SNI would be checked for that name).
    assert peers[0] == peers[1] == peers[2]
    assert peers[3] != peers[0]
    assert receiver.requests[3].headers["host"] == f"{other_name}:{receiver.port}"


def test_answers_are_read_as_sent_never_decompressed(receiver: Receiver):
    compressed = gzip.compress(b"x" * (MAX_BODY_BYTES * 8))
    receiver.script(Reply(500, body=compressed, headers={"content-encoding": "gzip"}))
    response = _post(receiver.url(), LOOPBACK_ONLY)
    assert receiver.requests[0].headers["accept-encoding"] == "identity"
    assert response.body == compressed[:MAX_BODY_BYTES]


@pytest.fixture
def raw_receiver() -> Iterator[Callable[[bool], int]]:
    """Answers one request with a 503's status line and headers at once, then the body one byte every
    0.1 s (trickling) or nothing at all; returns the port."""
    listeners: list[socket.socket] = []

    def start(trickle: bool) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def serve() -> None:
            connection, _ = listener.accept()
            with connection, contextlib.suppress(OSError):
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 1000\r\n\r\n")
                for _ in range(30):
                    if trickle:
                        connection.sendall(b"x")
                    time.sleep(0.1)

        threading.Thread(target=serve, daemon=True).start()
        return listener.getsockname()[1]

    yield start
    for listener in listeners:
        listener.close()


def test_a_trickling_answer_is_cut_at_the_timeout(raw_receiver: Callable[[bool], int]):
    policy = OutboundPolicy(allowlist=["127.0.0.1"], timeout_seconds=0.5)
    started = time.monotonic()
    response = _post(f"http://127.0.0.1:{raw_receiver(True)}/hook", policy)
    # The status arrived in time, so it is the answer, with what of the body came within the budget.
    assert response.status_code == 503
    assert 0 < len(response.body) < 20
    assert time.monotonic() - started < 2


def test_an_answer_silent_after_its_headers_times_out(raw_receiver: Callable[[bool], int]):
    policy = OutboundPolicy(allowlist=["127.0.0.1"], timeout_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        _post(f"http://127.0.0.1:{raw_receiver(False)}/hook", policy)
    assert time.monotonic() - started < 2


def test_a_forked_child_sends_on_a_loop_of_its_own(receiver: Receiver):
    # Celery's prefork pool: the parent's loop thread does not exist in the child, nor may its pools be used.
    assert _post(receiver.url(), LOOPBACK_ONLY).status_code == 200
    child = os.fork()
    if child == 0:
        try:
            ok = _post(receiver.url(), LOOPBACK_ONLY).status_code == 200
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(receiver.requests) == 2
    assert receiver.requests[0].peer != receiver.requests[1].peer
    # The parent's kept-alive connection is still its own.
    assert _post(receiver.url(), LOOPBACK_ONLY).status_code == 200
    assert receiver.requests[2].peer == receiver.requests[0].peer


def test_pools_are_bounded_least_recently_used_first(receiver: Receiver, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(outbound, "_MAX_POOLS", 2)
    policy = OutboundPolicy(allowlist=["127.0.0.1"], resolver=CountingResolver(["127.0.0.1"]))
    for name in ("a.tessera.test", "b.tessera.test", "a.tessera.test"):
        assert _post(receiver.url(host=name), policy).status_code == 200
    pools = outbound._pools[outbound._loop_threads[os.getpid()].loop]

    def names() -> list[str]:
        return [key[1] for key in pools]

    assert names() == ["b.tessera.test", "a.tessera.test"]
    [b_pool] = [pool for key, pool in pools.items() if key[1] == "b.tessera.test"]
    assert _post(receiver.url(host="c.tessera.test"), policy).status_code == 200
    # b's pool, the least recently used, made way for c's, and its connections are closed.
    assert names() == ["a.tessera.test", "c.tessera.test"]
    assert b_pool.session.closed
    assert receiver.requests[0].peer == receiver.requests[2].peer
