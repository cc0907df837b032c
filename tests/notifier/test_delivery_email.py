"""Email through a real in-process aiosmtpd server."""

from __future__ import annotations

from services.notifier.domain.messages import render_email
from services.notifier.domain.senders import Outcome, SmtpSecurity, SmtpSettings, send_email
from shared.core.outbound import OutboundPolicy
from tests.notifier.builders import make_alert, make_notification
from tests.notifier.conftest import SMTP_PASSWORD, SMTP_USER, Certificate, SmtpServer

LOOPBACK = OutboundPolicy(allowlist=["127.0.0.1", "::1"])

SENDER = "tessera@alerts.example"
RECIPIENTS = ["oncall@example.com", "ml-team@example.com", "lead@example.org"]


def _plain(server: SmtpServer) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=server.port, security=SmtpSecurity.NONE, timeout_seconds=5)


def test_multipart_email_reaches_every_recipient(smtp_server: SmtpServer):
    notification = make_notification(make_alert(summary="PSI 0.31 on feature <tenure>"))
    message = render_email(notification, sender=SENDER, recipients=RECIPIENTS)
    result = send_email(message, smtp=_plain(smtp_server), policy=LOOPBACK)
    assert result.ok and result.status_code == 250 and result.error is None

    [(envelope, message)] = smtp_server.sink.messages
    assert sorted(envelope.rcpt_tos) == sorted(RECIPIENTS)
    assert envelope.mail_from == SENDER
    assert message.get_content_type() == "multipart/alternative"
    parts = {part.get_content_type(): part.get_payload(decode=True).decode() for part in message.get_payload()}
    assert "PSI 0.31 on feature <tenure>" in parts["text/plain"]
    assert "PSI 0.31 on feature &lt;tenure&gt;" in parts["text/html"]
    assert message["Subject"] == "[FIRING:1] DriftDetected"


def test_retried_notification_keeps_its_message_id(smtp_server: SmtpServer):
    notification = make_notification()
    for _ in range(2):
        message = render_email(notification, sender=SENDER, recipients=RECIPIENTS[:1])
        assert send_email(message, smtp=_plain(smtp_server), policy=LOOPBACK).ok
    first, second = (message for _, message in smtp_server.sink.messages)
    assert first["Message-ID"] == second["Message-ID"]
    assert notification.id in first["Message-ID"]
    other = render_email(make_notification(notification_id="another-id"), sender=SENDER, recipients=RECIPIENTS)
    assert other["Message-ID"] != first["Message-ID"]


def test_transient_smtp_reply_is_retried(smtp_server: SmtpServer):
    smtp_server.sink.data_reply = "451 4.3.0 Mailbox temporarily unavailable"
    message = render_email(make_notification(), sender=SENDER, recipients=RECIPIENTS)
    result = send_email(message, smtp=_plain(smtp_server), policy=LOOPBACK)
    assert result.outcome is Outcome.RETRY and result.status_code == 451


def test_permanent_smtp_reply_fails_for_good(smtp_server: SmtpServer):
    smtp_server.sink.data_reply = "554 5.7.1 Message rejected as spam"
    message = render_email(make_notification(), sender=SENDER, recipients=RECIPIENTS)
    result = send_email(message, smtp=_plain(smtp_server), policy=LOOPBACK)
    assert result.outcome is Outcome.FAILED and result.status_code == 554


def test_refused_recipients(smtp_server: SmtpServer):
    smtp_server.sink.refuse = {"lead@example.org": "550 5.1.1 No such user"}
    message = render_email(make_notification(), sender=SENDER, recipients=RECIPIENTS)
    partial = send_email(message, smtp=_plain(smtp_server), policy=LOOPBACK)
    assert partial.ok and "lead@example.org (550)" in (partial.error or "")

    smtp_server.sink.refuse = {address: "450 4.2.1 Try again later" for address in RECIPIENTS}
    all_refused = send_email(message, smtp=_plain(smtp_server), policy=LOOPBACK)
    assert all_refused.outcome is Outcome.RETRY and all_refused.status_code == 450


def test_starttls_and_login(starttls_smtp_server: SmtpServer, certificate: Certificate):
    settings = SmtpSettings(
        host="localhost",
        port=starttls_smtp_server.port,
        security=SmtpSecurity.STARTTLS,
        username=SMTP_USER,
        password=SMTP_PASSWORD,
        timeout_seconds=5,
        ssl_context=certificate.client_context(),
    )
    assert SMTP_PASSWORD not in repr(settings)
    message = render_email(make_notification(), sender=SENDER, recipients=RECIPIENTS[:1])
    assert send_email(message, smtp=settings, policy=LOOPBACK).ok
    assert len(starttls_smtp_server.sink.messages) == 1

    wrong_password = SmtpSettings(**{**settings.__dict__, "password": "wrong"})
    result = send_email(message, smtp=wrong_password, policy=LOOPBACK)
    assert result.outcome is Outcome.FAILED and result.status_code == 535


def test_unreachable_server_is_retried():
    settings = SmtpSettings(host="127.0.0.1", port=9, security=SmtpSecurity.NONE, timeout_seconds=2)
    message = render_email(make_notification(), sender=SENDER, recipients=RECIPIENTS)
    result = send_email(message, smtp=settings, policy=LOOPBACK)
    assert result.outcome is Outcome.RETRY and result.status_code is None


def test_implicit_tls(implicit_tls_smtp_server: SmtpServer, certificate: Certificate):
    settings = SmtpSettings(
        host="localhost",
        port=implicit_tls_smtp_server.port,
        security=SmtpSecurity.TLS,
        timeout_seconds=5,
        ssl_context=certificate.client_context(),
    )
    message = render_email(make_notification(), sender=SENDER, recipients=RECIPIENTS)
    assert send_email(message, smtp=settings, policy=LOOPBACK).ok
    assert len(implicit_tls_smtp_server.sink.messages) == 1

    untrusted = SmtpSettings(**{**settings.__dict__, "ssl_context": None})
    result = send_email(message, smtp=untrusted, policy=LOOPBACK)
    assert result.outcome is Outcome.FAILED and "certificate" in (result.error or "")


def test_smtp_host_is_vetted_like_webhook_urls(smtp_server: SmtpServer):
    message = render_email(make_notification(), sender=SENDER, recipients=RECIPIENTS)
    result = send_email(message, smtp=_plain(smtp_server), policy=OutboundPolicy())
    assert result.outcome is Outcome.FAILED and "not a public address" in (result.error or "")
    assert smtp_server.sink.messages == []
