from __future__ import annotations

import json
from datetime import timedelta

import pytest

from services.notifier.domain.messages import (
    MAX_LISTED_ALERTS,
    SLACK_HEADER_LIMIT,
    render_email,
    render_slack,
    render_webhook,
)
from tests.notifier.builders import T0, make_alert, make_notification


def _fields(payload: dict) -> list[str]:
    return [field["text"] for block in payload["blocks"] if "fields" in block for field in block["fields"]]


def test_slack_blocks_header_fields_and_button():
    notification = make_notification(
        make_alert("DriftDetected", severity="warning", deployment="churn-prod"),
        make_alert("DriftDetected", severity="critical", deployment="churn-canary", feature="tenure"),
    )
    payload = render_slack(notification)
    header = payload["blocks"][0]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert header["text"]["text"].startswith(":red_circle: [FIRING:2] DriftDetected")
    assert "CRITICAL" in header["text"]["text"]
    assert _fields(payload) == [
        "*Model*\nchurn",
        "*Project*\nfraud",
        "*Deployment*\nchurn-canary, churn-prod",
        "*Severity*\ncritical",
    ]
    button = payload["blocks"][-1]["elements"][0]
    assert button["type"] == "button" and button["url"] == notification.link
    assert payload["text"]  # fallback for push notifications


def test_slack_escapes_and_truncates():
    long_name = "Drift" * 60
    notification = make_notification(
        make_alert(long_name, summary="<!channel> & <https://evil.example|click>"),
        *(make_alert(f"Alert{index}") for index in range(MAX_LISTED_ALERTS + 2)),
    )
    payload = render_slack(notification)
    assert len(payload["blocks"][0]["text"]["text"]) <= SLACK_HEADER_LIMIT
    listing = payload["blocks"][2]["text"]["text"]
    assert "<!channel>" not in listing and "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;" in listing
    assert "…and 3 more" in listing


def test_slack_resolved():
    notification = make_notification(make_alert(ends_at=T0 + timedelta(seconds=30)))
    header = render_slack(notification)["blocks"][0]["text"]["text"]
    assert header.startswith(":white_check_mark: [RESOLVED] DriftDetected")


def test_webhook_body_is_versioned_and_stable():
    firing = make_alert("DriftDetected")
    resolved = make_alert("AccuracyDropped", ends_at=T0 + timedelta(seconds=30))
    notification = make_notification(firing, resolved)
    body = render_webhook(notification)
    assert body == render_webhook(notification)  # retries send identical bytes
    payload = json.loads(body)
    assert payload["version"] == "1"
    assert payload["notification_id"] == notification.id
    assert payload["status"] == "firing"
    assert payload["common_labels"] == {"severity": "high", "model": "churn", "project": "fraud"}
    by_name = {alert["labels"]["alertname"]: alert for alert in payload["alerts"]}
    assert by_name["DriftDetected"]["status"] == "firing" and by_name["DriftDetected"]["ends_at"] is None
    assert by_name["AccuracyDropped"]["status"] == "resolved"
    assert by_name["AccuracyDropped"]["ends_at"] == "2026-11-25T12:00:30Z"
    assert by_name["DriftDetected"]["fingerprint"] == firing.fingerprint


def test_email_headers_and_bodies():
    notification = make_notification(make_alert(summary="PSI <0.3> & rising"))
    message = render_email(notification, sender="Tessera <alerts@tessera.example>", recipients=["a@x.io", "b@y.io"])
    assert message["To"] == "a@x.io, b@y.io"
    assert message["Subject"] == "[FIRING:1] DriftDetected"
    assert message["Message-ID"] == f"<notification.{notification.id}@tessera.example>"
    assert message["Date"] == "Wed, 25 Nov 2026 12:01:00 +0000"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "PSI <0.3> & rising" in text and notification.link in text
    assert "PSI &lt;0.3&gt; &amp; rising" in html and f"href='{notification.link}'" in html
    with pytest.raises(ValueError):
        render_email(notification, sender="alerts@tessera.example", recipients=[])


def test_headline_severity_is_the_worst_still_firing():
    notification = make_notification(
        make_alert("A", severity="critical", ends_at=T0 + timedelta(seconds=10)),
        make_alert("B", severity="warning"),
        make_alert("C", severity="custom"),
    )
    assert notification.severity == "warning"
    assert notification.title == "churn"  # several alert names: the group labels
