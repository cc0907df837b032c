"""Real receivers on 127.0.0.1 standing in for the outside world: an HTTP(S) server scripted to answer
like Slack or a flaky webhook, and an aiosmtpd SMTP server; plus a throwaway TLS certificate."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Pipeline timings for tests, set before any worker, beat or Settings reads them: ticks of a fraction
# of a second, retries after a fraction of a second, a dead worker's delivery retried after 3 s.
os.environ.update(
    {
        "TESSERA_NOTIFIER_FLUSH_INTERVAL_S": "0.5",
        "TESSERA_NOTIFIER_SWEEP_INTERVAL_S": "1",
        "TESSERA_NOTIFIER_LEASE_S": "3",
        "TESSERA_NOTIFIER_REQUEUE_AFTER_S": "3",
        "TESSERA_NOTIFIER_BACKOFF_BASE_S": "0.2",
        "TESSERA_NOTIFIER_BACKOFF_CAP_S": "1",
        "TESSERA_NOTIFIER_MAX_ATTEMPTS": "5",
        "TESSERA_QUARANTINE_RETRY_BASE_S": "0.2",
    }
)

# A name no DNS knows: reaching it proves the connection went to the pinned IP, not a new lookup.
PINNED_HOSTNAME = "hooks.tessera.test"


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    # The client's (address, port): requests on one kept-alive connection share it.
    peer: tuple[str, int] = ("", 0)


class Receiver:
    """Answers POSTs with scripted replies (then 200 "ok") and records what arrived."""

    def __init__(self, tls_context: ssl.SSLContext | None = None) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[ReceivedRequest] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # Keeps connections alive, as real webhook receivers and Slack do.
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender died mid-request (the worker-kill test): nothing was delivered, as an
                    # HTTP server would see it too.
                    self.close_connection = True
                    return
                receiver.requests.append(
                    ReceivedRequest(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body, self.client_address[:2]
                    )
                )
                reply = receiver.replies.popleft() if receiver.replies else Reply()
                time.sleep(reply.delay_seconds)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting, which timeout tests intend

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls_context is not None:
            self.server.socket = tls_context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.scheme = "https" if tls_context else "http"
        # A short poll interval keeps shutdown (and so each test's teardown) quick.
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path
    pem: str

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.pem)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """Self-signed certificate for PINNED_HOSTNAME, localhost and 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PINNED_HOSTNAME)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(PINNED_HOSTNAME),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    (folder / "cert.pem").write_text(pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Certificate(cert_file=folder / "cert.pem", key_file=folder / "key.pem", pem=pem)


@pytest.fixture
def tls_receiver(certificate: Certificate) -> Iterator[Receiver]:
    server = Receiver(tls_context=certificate.server_context())
    yield server
    server.close()


class MailSink:
    """aiosmtpd handler keeping what it accepted; `data_reply` / `refuse` script failures."""

    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, Message]] = []
        # Every message offered, accepted or refused (to compare retries).
        self.offered: list[Message] = []
        self.data_reply: str | None = None
        self.refuse: dict[str, str] = {}

    async def handle_RCPT(self, server, session: Session, envelope: Envelope, address: str, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session: Session, envelope: Envelope) -> str:
        message = message_from_bytes(envelope.original_content or b"")
        self.offered.append(message)
        if self.data_reply:
            return self.data_reply
        self.messages.append((envelope, message))
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class SmtpServer:
    sink: MailSink
    port: int


def _start_smtp(sink: MailSink, **options) -> tuple[Controller, int]:
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, **options)
    controller.start()
    return controller, port


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    sink = MailSink()
    controller, port = _start_smtp(sink)
    yield SmtpServer(sink, port)
    controller.stop()


SMTP_USER, SMTP_PASSWORD = "notifier", "s3cret-pass"


def _authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    valid = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    # handled=False: aiosmtpd itself answers a failure with 535.
    return AuthResult(success=valid, handled=False)


@pytest.fixture
def starttls_smtp_server(certificate: Certificate) -> Iterator[SmtpServer]:
    """Requires STARTTLS, then AUTH, like a submission server on port 587."""
    sink = MailSink()
    controller, port = _start_smtp(
        sink,
        tls_context=certificate.server_context(),
        require_starttls=True,
        authenticator=_authenticate,
        auth_required=True,
    )
    yield SmtpServer(sink, port)
    controller.stop()


@pytest.fixture
def implicit_tls_smtp_server(certificate: Certificate) -> Iterator[SmtpServer]:
    """TLS from the first byte, like port 465."""
    sink = MailSink()
    controller, port = _start_smtp(sink, ssl_context=certificate.server_context())
    yield SmtpServer(sink, port)
    controller.stop()
