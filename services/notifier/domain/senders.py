"""Senders for webhooks, Slack and email: dispatch's way out, one attempt each.

Every sender returns a `DeliveryResult`, never raises for a failed delivery, and classifies it. The
webhook and Slack senders are coroutines (aiohttp); the email sender is sync (smtplib), for a thread.

- HTTP 2xx: delivered. 3xx: failed for good (redirects are not followed; the URL must be fixed).
- HTTP 429: retry, not before `Retry-After` (seconds or an HTTP date), as Slack asks.
- HTTP 408, 5xx, timeouts, connection errors and DNS failures: retry (a 503's Retry-After is
  honoured too).
- HTTP 410 Gone: failed for good and the channel should be disabled (Slack: channel archived or
  the webhook revoked).
- Other 4xx, refused destinations (SSRF guard), TLS certificate errors, invalid custom headers:
  failed for good.
- SMTP 4xx replies and connection trouble: retry. SMTP 5xx replies and refused hosts: failed for good.

What follows an attempt (backoff, Retry-After, dead letters) is the attempt log's (`attempt_log`).
Errors name hosts and status codes only: Slack webhook URLs and SMTP passwords are secrets and never
appear in results.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets as token_source
import smtplib
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

import aiohttp
import orjson
from standardwebhooks import Webhook
from yarl import URL

from services.notifier.domain import messages
from services.notifier.domain.config.cache import ChannelTarget
from shared.core.errors import InvalidParameter
from shared.core.outbound import (
    OutboundPolicy,
    OutboundRefused,
    OutboundResponse,
    ResolutionFailed,
    post,
    vet_host,
)
from shared.core.settings import Settings

USER_AGENT = "Tessera-Notifier/1"


# Set by the sender; a channel's custom headers cannot replace them.
RESERVED_WEBHOOK_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
        "content-length",
        "host",
        "transfer-encoding",
        "user-agent",
    }
)


_ERROR_BODY_CHARS = 200


# RFC 9110 token characters.
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


# A receiver may ask us to wait, but not to park a notification for days.
MAX_RETRY_AFTER_SECONDS = 6 * 3600.0


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"
    # Failed for good, and the channel's endpoint is gone: disable the channel.
    DISABLE_CHANNEL = "disable_channel"


@dataclass(frozen=True)
class DeliveryResult:
    outcome: Outcome
    latency_ms: float
    # HTTP status, or the SMTP reply code.
    status_code: int | None = None
    error: str | None = None
    # Seconds the receiver asked us to wait before the next attempt.
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.DELIVERED

    @property
    def retryable(self) -> bool:
        return self.outcome is Outcome.RETRY

    @property
    def disable_channel(self) -> bool:
        return self.outcome is Outcome.DISABLE_CHANNEL


@lru_cache(maxsize=8)
def outbound_policy(allowlist: tuple[str, ...]) -> OutboundPolicy:
    """One policy per process: building an SSL context loads the system CAs (milliseconds), too slow
    to repeat for every delivery."""
    return OutboundPolicy(allowlist=allowlist, verify=ssl.create_default_context())


def policy_for(settings: Settings) -> OutboundPolicy:
    return outbound_policy(tuple(settings.outbound_allowlist))


def active_signing_secrets(secrets: Mapping[str, Any], now: datetime) -> list[str]:
    """The current secret first, then old ones still inside their rotation overlap."""
    return [
        entry["secret"]
        for entry in secrets.get("signing_secrets", [])
        if entry["expires_at"] is None or datetime.fromisoformat(entry["expires_at"]) > now
    ]


async def send(
    target: ChannelTarget, notification: messages.Notification, policy: OutboundPolicy, now: datetime
) -> DeliveryResult:
    """Render for the channel type and send; never raises for a failed delivery."""
    if target.type == "slack":
        return await send_slack(target.secrets["url"], messages.render_slack(notification), policy=policy)
    if target.type == "webhook":
        return await send_webhook(
            target.secrets["url"],
            messages.render_webhook(notification),
            notification_id=notification.id,
            signing_secrets=active_signing_secrets(target.secrets, now),
            policy=policy,
            custom_headers=target.secrets.get("headers") or {},
            now=now,
        )
    config = target.config
    message = messages.render_email(notification, sender=config["sender"], recipients=config["recipients"])
    smtp = SmtpSettings(
        host=config["smtp_host"],
        port=config["smtp_port"],
        security=SmtpSecurity(config["security"]),
        username=config.get("username"),
        password=target.secrets.get("password"),
    )
    # smtplib blocks: in a thread, so the batch's other sends go on meanwhile.
    return await asyncio.to_thread(send_email, message, smtp=smtp, policy=policy)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as delta-seconds or an HTTP date (RFC 9110); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def _body_excerpt(body: bytes) -> str:
    return body[:_ERROR_BODY_CHARS].decode("utf-8", errors="replace").strip()


def classify_http(response: OutboundResponse, now: datetime) -> DeliveryResult:
    status = response.status_code
    latency = response.elapsed_ms
    if 200 <= status < 300:
        return DeliveryResult(Outcome.DELIVERED, latency, status)
    if 300 <= status < 400:
        try:
            target = URL(response.headers.get("location", "")).host or "a relative location"
        except ValueError:
            target = "an invalid location"
        return DeliveryResult(
            Outcome.FAILED,
            latency,
            status,
            error=f"receiver answered {status} redirecting to {target}; redirects are not followed, "
            "configure the final URL",
        )
    detail = f"receiver answered {status}: {_body_excerpt(response.body)}".rstrip(": ")
    if status == 410:
        return DeliveryResult(Outcome.DISABLE_CHANNEL, latency, status, error=detail)
    if status == 429 or status == 408 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("retry-after"), now)
        return DeliveryResult(Outcome.RETRY, latency, status, error=detail, retry_after=retry_after)
    return DeliveryResult(Outcome.FAILED, latency, status, error=detail)


def _caused_by_certificate(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _without_url(exc: aiohttp.ClientError) -> str:
    # A ClientResponseError (a broken answer) names the URL, and a Slack webhook URL is a secret.
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{exc.status} {exc.message}".strip()
    return str(exc)


async def _post_and_classify(
    url: str, content: bytes, headers: Mapping[str, str], policy: OutboundPolicy
) -> DeliveryResult:
    started = time.monotonic()

    def elapsed() -> float:
        return (time.monotonic() - started) * 1000

    try:
        response = await post(url, content=content, headers=headers, policy=policy)
    except OutboundRefused as exc:
        return DeliveryResult(Outcome.FAILED, elapsed(), error=f"destination refused: {exc}")
    except ResolutionFailed as exc:
        return DeliveryResult(Outcome.RETRY, elapsed(), error=str(exc))
    except TimeoutError as exc:
        return DeliveryResult(Outcome.RETRY, elapsed(), error=f"timed out: {type(exc).__name__}")
    except aiohttp.ClientError as exc:
        # A bad certificate will not fix itself; everything else on the wire may.
        if _caused_by_certificate(exc):
            return DeliveryResult(Outcome.FAILED, elapsed(), error=f"TLS certificate rejected: {exc}")
        return DeliveryResult(Outcome.RETRY, elapsed(), error=f"{type(exc).__name__}: {_without_url(exc)}")
    return classify_http(response, datetime.now(UTC))


# --- Webhooks (Standard Webhooks) -----------------------------------------------------------------


def generate_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(token_source.token_bytes(32)).decode()


@lru_cache(maxsize=256)
def _signer(secret: str) -> Webhook:
    # Decoding the secret is most of a signature's cost; channels are few, deliveries many.
    return Webhook(secret)


def webhook_signature_headers(
    message_id: str, body: bytes, signing_secrets: Sequence[str], timestamp: datetime
) -> dict[str, str]:
    """Standard Webhooks headers. Several secrets (rotation: new and old) give space-separated
    signatures, and a receiver holding either secret verifies."""
    if not signing_secrets:
        raise ValueError("at least one signing secret is required")
    moment = timestamp.astimezone(UTC)
    payload = body.decode("utf-8")
    signatures = [_signer(secret).sign(message_id, moment, payload) for secret in signing_secrets]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


def validate_custom_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A channel's extra headers; also for validating channel config before it is stored."""
    for name, value in headers.items():
        if not _HEADER_NAME_RE.fullmatch(name):
            raise InvalidParameter(f"invalid header name {name!r}")
        if name.lower() in RESERVED_WEBHOOK_HEADERS:
            raise InvalidParameter(f"header {name!r} is set by Tessera and cannot be overridden")
        # CR/LF would let a value smuggle in further headers.
        if any(char in value for char in "\r\n\0"):
            raise InvalidParameter(f"header {name!r} has a control character in its value")
    return dict(headers)


async def send_webhook(
    url: str,
    body: bytes,
    *,
    notification_id: str,
    signing_secrets: Sequence[str],
    policy: OutboundPolicy,
    custom_headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> DeliveryResult:
    """POST a rendered webhook body (`messages.render_webhook`), signed; `webhook-id` is the
    notification id so the receiver can drop duplicates of a retried delivery."""
    try:
        headers = validate_custom_headers(custom_headers or {})
    except InvalidParameter as exc:
        return DeliveryResult(Outcome.FAILED, 0.0, error=exc.message)
    headers |= webhook_signature_headers(notification_id, body, signing_secrets, now or datetime.now(UTC))
    headers |= {"content-type": "application/json", "user-agent": USER_AGENT}
    return await _post_and_classify(url, body, headers, policy)


# --- Slack ---------------------------------------------------------------------------------------


async def send_slack(webhook_url: str, payload: Mapping[str, Any], *, policy: OutboundPolicy) -> DeliveryResult:
    """POST Block Kit (`messages.render_slack`) to an incoming-webhook URL (the URL is the secret)."""
    body = orjson.dumps(payload)
    headers = {"content-type": "application/json; charset=utf-8", "user-agent": USER_AGENT}
    return await _post_and_classify(webhook_url, body, headers, policy)


# --- Email ---------------------------------------------------------------------------------------


class SmtpSecurity(StrEnum):
    STARTTLS = "starttls"
    # Implicit TLS from the first byte (port 465).
    TLS = "tls"
    NONE = "none"


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 587
    security: SmtpSecurity = SmtpSecurity.STARTTLS
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_seconds: float = 15.0
    # None: the system's default verification.
    ssl_context: ssl.SSLContext | None = None


def _smtp_reply_result(code: int, reply: bytes | str, elapsed_ms: float, what: str) -> DeliveryResult:
    text = reply.decode("utf-8", errors="replace") if isinstance(reply, bytes) else reply
    outcome = Outcome.RETRY if 400 <= code < 500 else Outcome.FAILED
    return DeliveryResult(outcome, elapsed_ms, code, error=f"{what}: {code} {text}".strip())


def send_email(message: EmailMessage, *, smtp: SmtpSettings, policy: OutboundPolicy) -> DeliveryResult:
    """Send a rendered email (`messages.render_email`) to every recipient in its headers.

    The SMTP host is vetted like webhook URLs (`policy`): a user-configured host must not reach
    internal services (SMTP commands can be smuggled into other line protocols).

    Recipients the server refuses while others are accepted do not fail the delivery; they are
    named in `error`.
    """
    started = time.monotonic()

    def elapsed() -> float:
        return (time.monotonic() - started) * 1000

    try:
        address = vet_host(smtp.host, smtp.port, policy)
    except OutboundRefused as exc:
        return DeliveryResult(Outcome.FAILED, elapsed(), error=f"destination refused: {exc}")
    except ResolutionFailed as exc:
        return DeliveryResult(Outcome.RETRY, elapsed(), error=str(exc))
    context = smtp.ssl_context or ssl.create_default_context()
    try:
        client: smtplib.SMTP
        if smtp.security is SmtpSecurity.TLS:
            client = smtplib.SMTP_SSL(timeout=smtp.timeout_seconds, context=context)
        else:
            client = smtplib.SMTP(timeout=smtp.timeout_seconds)
        # Connect to the vetted address (no second DNS answer), while TLS still checks the configured
        # name: smtplib takes SNI and the certificate's expected name from `_host`.
        client._host = smtp.host  # type: ignore[attr-defined]
        code, reply = client.connect(str(address), smtp.port)
        if code != 220:
            client.close()
            raise smtplib.SMTPConnectError(code, reply)
        with client:
            if smtp.security is SmtpSecurity.STARTTLS:
                client.starttls(context=context)
            if smtp.username:
                client.login(smtp.username, smtp.password or "")
            refused = client.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        retry = any(400 <= code < 500 for code in codes)
        return DeliveryResult(
            Outcome.RETRY if retry else Outcome.FAILED,
            elapsed(),
            max(codes, default=None),
            error="all recipients refused: "
            + ", ".join(f"{address} ({code})" for address, (code, _) in exc.recipients.items()),
        )
    except smtplib.SMTPConnectError as exc:
        return DeliveryResult(Outcome.RETRY, elapsed(), exc.smtp_code, error=f"cannot connect: {exc.smtp_code}")
    except smtplib.SMTPResponseException as exc:
        # Sender refused, data refused, authentication failed, HELO refused: the reply code decides.
        return _smtp_reply_result(exc.smtp_code, exc.smtp_error, elapsed(), type(exc).__name__)
    except smtplib.SMTPNotSupportedError as exc:
        return DeliveryResult(Outcome.FAILED, elapsed(), error=f"server does not support: {exc}")
    except ssl.SSLCertVerificationError as exc:
        return DeliveryResult(Outcome.FAILED, elapsed(), error=f"TLS certificate rejected: {exc.verify_message}")
    except (smtplib.SMTPException, OSError) as exc:
        # Disconnects, timeouts, refused connections, TLS hiccups: worth another try.
        return DeliveryResult(Outcome.RETRY, elapsed(), error=f"{type(exc).__name__}: {exc}")
    error = None
    if refused:
        error = "some recipients refused: " + ", ".join(
            f"{address} ({code})" for address, (code, _) in sorted(refused.items())
        )
    return DeliveryResult(Outcome.DELIVERED, elapsed(), 250, error=error)
