"""Webhook and Slack senders against a real local receiver: signing, retries, classification."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.notifier.domain import dispatch
from services.notifier.domain.attempt_log import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_CAP_SECONDS,
    MAX_ATTEMPTS,
    DeliveryState,
    next_attempt_delay,
    state_after,
)
from services.notifier.domain.config.cache import ChannelTarget
from services.notifier.domain.dispatch import ClaimedDelivery
from services.notifier.domain.messages import build_test_notification, render_slack, render_webhook
from services.notifier.domain.senders import (
    MAX_RETRY_AFTER_SECONDS,
    DeliveryResult,
    Outcome,
    generate_webhook_secret,
    parse_retry_after,
    send_slack,
    send_webhook,
)
from shared.core.outbound import OutboundPolicy, run
from shared.core.settings import Settings
from tests.notifier.builders import make_alert, make_notification
from tests.notifier.conftest import Receiver, Reply, SmtpServer

POLICY = OutboundPolicy(allowlist=["127.0.0.1"], timeout_seconds=2.0)


def _send(receiver: Receiver, secrets: list[str], **options):
    notification = make_notification()
    return run(
        send_webhook(
            receiver.url(),
            render_webhook(notification),
            notification_id=notification.id,
            signing_secrets=secrets,
            policy=options.pop("policy", POLICY),
            **options,
        )
    )


def test_signed_webhook_verifies_with_standard_webhooks(receiver: Receiver):
    secret = generate_webhook_secret()
    result = _send(receiver, [secret], custom_headers={"X-Team": "ml"})
    assert result.ok and result.status_code == 200 and result.latency_ms > 0

    request = receiver.requests[0]
    payload = Webhook(secret).verify(request.body, request.headers)
    assert payload["notification_id"] == make_notification().id
    assert payload["status"] == "firing" and payload["version"] == "1"
    assert request.headers["webhook-id"] == make_notification().id
    assert request.headers["x-team"] == "ml"
    assert request.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({"webhook-id": "forged"}, "cannot be overridden"),
        ({"Content-Type": "text/plain"}, "cannot be overridden"),
        ({"X-Evil": "1\r\nX-Injected: yes"}, "control character"),
        ({"Bad Name": "x"}, "invalid header name"),
    ],
)
def test_bad_custom_headers_fail_without_sending(receiver: Receiver, headers: dict, problem: str):
    result = _send(receiver, [generate_webhook_secret()], custom_headers=headers)
    assert result.outcome is Outcome.FAILED and problem in (result.error or "")
    assert receiver.requests == []


def test_rotation_signs_with_both_secrets(receiver: Receiver):
    new_secret, old_secret = generate_webhook_secret(), generate_webhook_secret()
    assert _send(receiver, [new_secret, old_secret]).ok
    request = receiver.requests[0]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(new_secret).verify(request.body, request.headers)
    Webhook(old_secret).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_webhook_secret()).verify(request.body, request.headers)


def test_tampered_body_and_stale_timestamp_fail_verification(receiver: Receiver):
    secret = generate_webhook_secret()
    _send(receiver, [secret])
    request = receiver.requests[0]
    tampered = request.body.replace(b'"firing"', b'"resolved"')
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, request.headers)

    _send(receiver, [secret], now=datetime.now(UTC) - timedelta(minutes=10))
    stale = receiver.requests[1]
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(stale.body, stale.headers)


def test_server_errors_retry_until_delivered_with_the_same_id_and_body(receiver: Receiver):
    receiver.script(Reply(500, b"boom"), Reply(502), Reply(503))
    states = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        result = _send(receiver, [generate_webhook_secret()])
        states.append(state_after(result, attempt))
        if not result.retryable:
            break
    assert states == [DeliveryState.RETRY_SCHEDULED] * 3 + [DeliveryState.DELIVERED]
    assert len({request.headers["webhook-id"] for request in receiver.requests}) == 1
    assert len({request.body for request in receiver.requests}) == 1


def test_slack_rate_limit_honours_retry_after(receiver: Receiver):
    receiver.script(
        Reply(429, b"rate_limited", {"Retry-After": "30"}),
        Reply(429, b"rate_limited", {"Retry-After": format_datetime(datetime.now(UTC) + timedelta(seconds=120))}),
    )
    first = run(send_slack(receiver.url(), render_slack(make_notification()), policy=POLICY))
    assert first.outcome is Outcome.RETRY and first.status_code == 429 and first.retry_after == 30
    assert "rate_limited" in (first.error or "")
    assert next_attempt_delay(1, first.retry_after, rng=lambda: 0.0) == 30

    second = run(send_slack(receiver.url(), render_slack(make_notification()), policy=POLICY))
    assert second.retry_after is not None and 110 <= second.retry_after <= 120


def test_slack_receives_block_kit(receiver: Receiver):
    notification = make_notification(make_alert(severity="critical", deployment="churn-prod"))
    assert run(send_slack(receiver.url(), render_slack(notification), policy=POLICY)).ok
    request = receiver.requests[0]
    assert request.headers["content-type"].startswith("application/json")
    body = json.loads(request.body)
    assert body["blocks"][0]["type"] == "header"
    assert "CRITICAL" in body["blocks"][0]["text"]["text"]


def test_gone_disables_channel_and_other_4xx_fail_for_good(receiver: Receiver):
    receiver.script(Reply(410, b"channel_is_archived"), Reply(404, b"no_service"), Reply(400, b"invalid_payload"))
    gone = run(send_slack(receiver.url(), {"text": "x"}, policy=POLICY))
    assert gone.outcome is Outcome.DISABLE_CHANNEL and gone.disable_channel
    assert "channel_is_archived" in (gone.error or "")
    assert state_after(gone, 1) is DeliveryState.FAILED
    for expected in (404, 400):
        result = run(send_slack(receiver.url(), {"text": "x"}, policy=POLICY))
        assert (result.outcome, result.status_code) == (Outcome.FAILED, expected)


def test_redirect_to_localhost_is_a_permanent_failure(receiver: Receiver):
    receiver.script(Reply(307, headers={"Location": f"http://localhost:{receiver.port}/admin"}))
    result = _send(receiver, [generate_webhook_secret()])
    assert result.outcome is Outcome.FAILED and result.status_code == 307
    assert "redirects are not followed" in (result.error or "")
    assert [request.path for request in receiver.requests] == ["/hook"]


def test_refused_destination_is_permanent_and_never_contacted(receiver: Receiver):
    result = run(send_slack(receiver.url(), {"text": "x"}, policy=OutboundPolicy()))
    assert result.outcome is Outcome.FAILED and "destination refused" in (result.error or "")
    assert receiver.requests == []


def test_slack_url_secret_stays_out_of_errors():
    result = run(send_slack("https://10.0.0.1/services/T000/B000/SECRETTOKEN", {"text": "x"}, policy=OutboundPolicy()))
    assert "SECRETTOKEN" not in (result.error or "")


def test_timeout_and_connection_refused_are_retried(receiver: Receiver):
    receiver.script(Reply(200, delay_seconds=1.0))
    slow = _send(
        receiver, [generate_webhook_secret()], policy=OutboundPolicy(allowlist=["127.0.0.1"], timeout_seconds=0.3)
    )
    assert slow.outcome is Outcome.RETRY and "timed out" in (slow.error or "")

    port = receiver.port
    receiver.close()
    refused = run(send_slack(f"http://127.0.0.1:{port}/hook", {"text": "x"}, policy=POLICY))
    assert refused.outcome is Outcome.RETRY and refused.status_code is None


def test_untrusted_certificate_fails_for_good(tls_receiver: Receiver):
    result = run(send_slack(tls_receiver.url(), {"text": "x"}, policy=POLICY))
    assert result.outcome is Outcome.FAILED and "certificate" in (result.error or "")


def test_test_button_uses_the_same_sender(receiver: Receiver):
    secret = generate_webhook_secret()
    notification = build_test_notification("5f7a", "ml-oncall", datetime.now(UTC), "https://tessera.example/c/1")
    result = run(
        send_webhook(
            receiver.url(),
            render_webhook(notification),
            notification_id=notification.id,
            signing_secrets=[secret],
            policy=POLICY,
        )
    )
    assert result.ok
    payload = Webhook(secret).verify(receiver.requests[0].body, receiver.requests[0].headers)
    assert payload["alerts"][0]["labels"]["alertname"] == "TesseraTestNotification"


def test_backoff_is_exponential_with_full_jitter_and_capped():
    ceilings = [next_attempt_delay(attempt, rng=lambda: 1.0) for attempt in range(1, 12)]
    assert ceilings[:3] == [BACKOFF_BASE_SECONDS, 2 * BACKOFF_BASE_SECONDS, 4 * BACKOFF_BASE_SECONDS]
    assert max(ceilings) == BACKOFF_CAP_SECONDS
    assert next_attempt_delay(5, rng=lambda: 0.0) == 0.0
    assert next_attempt_delay(1, retry_after=10 * 24 * 3600, rng=lambda: 0.5) == MAX_RETRY_AFTER_SECONDS


def test_retries_stop_in_dead_letter():
    retry = DeliveryResult(Outcome.RETRY, latency_ms=1.0, status_code=503)
    assert state_after(retry, MAX_ATTEMPTS - 1) is DeliveryState.RETRY_SCHEDULED
    assert state_after(retry, MAX_ATTEMPTS) is DeliveryState.DEAD_LETTER


def test_parse_retry_after_forms():
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("Wed, 25 Nov 2026 12:01:00 GMT", now) == 60
    assert parse_retry_after("Wed, 25 Nov 2026 11:00:00 GMT", now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_dns_failure_is_retried():
    def no_answer(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    result = run(
        send_slack("https://hooks.slack.example/services/x", {"text": "x"}, policy=OutboundPolicy(resolver=no_answer))
    )
    assert result.outcome is Outcome.RETRY and "cannot resolve hooks.slack.example" in (result.error or "")


def test_a_broken_answer_is_retried_and_the_url_stays_out_of_the_error():
    # Not HTTP at all: aiohttp's error for it names the URL, here a Slack URL, which is a secret.
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def answer_garbage() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

        threading.Thread(target=answer_garbage, daemon=True).start()
        port = listener.getsockname()[1]
        url = f"http://127.0.0.1:{port}/services/T000/B000/SECRETTOKEN"
        result = run(send_slack(url, {"text": "x"}, policy=POLICY))
    assert result.outcome is Outcome.RETRY and result.status_code is None
    assert result.error and "SECRETTOKEN" not in result.error


def _claimed(target: ChannelTarget | None, notification_id: str) -> ClaimedDelivery:
    return ClaimedDelivery(uuid.uuid4(), 1, 1, target, make_notification(notification_id=notification_id))


@pytest.fixture
def slack_receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def test_a_batch_is_sent_concurrently_and_answered_in_order(
    receiver: Receiver, slack_receiver: Receiver, smtp_server: SmtpServer
):
    """Webhooks, Slack and email in one batch, as the dispatch task and the test button send them."""
    settings = Settings(outbound_allowlist=["127.0.0.1"])
    secrets = {"url": receiver.url(), "signing_secrets": [{"secret": generate_webhook_secret(), "expires_at": None}]}
    webhook = ChannelTarget(uuid.uuid4(), "hook", "webhook", {}, secrets)
    slack = ChannelTarget(uuid.uuid4(), "slack", "slack", {}, {"url": slack_receiver.url()})
    email = ChannelTarget(
        uuid.uuid4(),
        "mail",
        "email",
        {
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp_server.port,
            "security": "none",
            "sender": "tessera@alerts.example",
            "recipients": ["oncall@example.com"],
        },
        {},
    )
    # Each webhook answer takes 0.4 s: one after the other, the eight would take 3.2 s.
    receiver.script(*[Reply(200, delay_seconds=0.4)] * 8)
    slack_receiver.script(Reply(410, b"channel_is_archived"))
    batch = [_claimed(webhook, f"n-{index}") for index in range(8)]
    batch += [_claimed(slack, "n-slack"), _claimed(email, "n-email"), _claimed(None, "n-gone")]

    started = time.monotonic()
    results = dispatch.send_all(batch, settings, datetime.now(UTC))
    assert time.monotonic() - started < 2.0

    assert [result.outcome for result in results] == [Outcome.DELIVERED] * 8 + [
        Outcome.DISABLE_CHANNEL,
        Outcome.DELIVERED,
        Outcome.FAILED,
    ]
    assert "disabled or deleted" in (results[-1].error or "")
    assert sorted(request.headers["webhook-id"] for request in receiver.requests) == [
        f"n-{index}" for index in range(8)
    ]
    assert len(smtp_server.sink.messages) == 1
    assert dispatch.send(_claimed(webhook, "n-single"), settings, datetime.now(UTC)).ok
