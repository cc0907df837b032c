"""Render one notification (a flushed group of alerts) for Slack, email and generic webhooks.

Rendering is pure: the same notification renders to the same bytes, so a retried delivery sends
exactly what the first attempt sent (same webhook body, same email Message-ID).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from types import MappingProxyType
from typing import Any

import orjson

from services.notifier.domain.alerts import Alert, AlertStatus, common_labels, severity_rank

WEBHOOK_PAYLOAD_VERSION = "1"
# Labels shown as their own fields: the things an ML engineer asks first.
CONTEXT_LABELS = (("model", "Model"), ("project", "Project"), ("deployment", "Deployment"))
# Alerts listed one by one in a message; the rest are counted, so huge groups stay readable.
MAX_LISTED_ALERTS = 10
# Slack Block Kit limits (characters).
SLACK_HEADER_LIMIT = 150
SLACK_SECTION_LIMIT = 3000
SLACK_FIELD_LIMIT = 2000

_SEVERITY_EMOJI = {"critical": ":red_circle:", "high": ":large_orange_circle:", "warning": ":warning:"}


@dataclass(frozen=True)
class Notification:
    # Stable across retries: the webhook-id, the email Message-ID and the receiver's dedup key.
    id: str
    group_key: str
    alerts: tuple[Alert, ...]
    # The flush time; alert statuses are taken at this instant.
    created_at: datetime
    group_labels: Mapping[str, str] = field(default_factory=dict)
    # Link back to the group in Tessera.
    link: str | None = None
    receiver: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "group_labels", MappingProxyType(dict(self.group_labels)))

    @property
    def firing(self) -> list[Alert]:
        return [alert for alert in self.alerts if not alert.is_resolved_at(self.created_at)]

    @property
    def status(self) -> AlertStatus:
        return AlertStatus.FIRING if self.firing else AlertStatus.RESOLVED

    @property
    def common_labels(self) -> dict[str, str]:
        return common_labels(self.alerts)

    @property
    def common_annotations(self) -> dict[str, str]:
        if not self.alerts:
            return {}
        shared = dict(self.alerts[0].annotations)
        for alert in self.alerts[1:]:
            shared = {key: value for key, value in shared.items() if alert.annotations.get(key) == value}
        return shared

    @property
    def severity(self) -> str:
        """The most severe label among the alerts still firing (or all, once resolved)."""
        considered = self.firing or list(self.alerts)
        severities = [alert.labels.get("severity", "") for alert in considered]
        ranked = sorted((value for value in severities if value), key=severity_rank)
        return ranked[0] if ranked else "info"

    @property
    def title(self) -> str:
        names = sorted({alert.name for alert in self.alerts if alert.name})
        if len(names) == 1:
            return names[0]
        if self.group_labels:
            return " ".join(self.group_labels[name] for name in sorted(self.group_labels))
        return f"{len(self.alerts)} alerts"

    @property
    def subject(self) -> str:
        """`[FIRING:2] DriftDetected`, as Alertmanager's default titles read."""
        count = f":{len(self.firing)}" if self.status is AlertStatus.FIRING else ""
        return f"[{self.status.upper()}{count}] {self.title}"

    def context_values(self) -> list[tuple[str, str]]:
        """(caption, value) for model/project/deployment; several distinct values are listed."""
        pairs = []
        for label, caption in CONTEXT_LABELS:
            values = sorted({alert.labels[label] for alert in self.alerts if label in alert.labels})
            if values:
                pairs.append((caption, ", ".join(values[:3]) + (", …" if len(values) > 3 else "")))
        return pairs


def build_test_notification(notification_id: str, receiver: str, now: datetime, link: str | None) -> Notification:
    """What the "send test message" button sends; it then goes through the normal senders."""
    alert = Alert(
        labels={"alertname": "TesseraTestNotification", "severity": "info"},
        annotations={"summary": f"Test message for channel {receiver}: delivery works."},
        starts_at=now,
    )
    return Notification(
        id=notification_id, group_key="test", alerts=(alert,), created_at=now, link=link, receiver=receiver
    )


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _alert_summary(alert: Alert) -> str:
    return alert.annotations.get("summary") or alert.annotations.get("description") or ""


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- Slack -------------------------------------------------------------------------------------


def _slack_escape(text: str) -> str:
    # Slack mrkdwn control characters; anything else would be read as a link or mention.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_slack(notification: Notification) -> dict[str, Any]:
    """Block Kit payload for an incoming webhook: header, context fields, alert list, link button."""
    resolved = notification.status is AlertStatus.RESOLVED
    emoji = ":white_check_mark:" if resolved else _SEVERITY_EMOJI.get(notification.severity, ":information_source:")
    headline = f"{notification.subject} · {notification.severity.upper()}"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _truncate(f"{emoji} {headline}", SLACK_HEADER_LIMIT), "emoji": True},
        }
    ]
    fields = [
        {"type": "mrkdwn", "text": _truncate(f"*{caption}*\n{_slack_escape(value)}", SLACK_FIELD_LIMIT)}
        for caption, value in notification.context_values()
    ]
    fields.append({"type": "mrkdwn", "text": f"*Severity*\n{_slack_escape(notification.severity)}"})
    blocks.append({"type": "section", "fields": fields})

    lines = []
    for alert in notification.alerts[:MAX_LISTED_ALERTS]:
        state = alert.status_at(notification.created_at)
        summary = _alert_summary(alert)
        line = f"• *{_slack_escape(alert.name or alert.fingerprint)}* ({state}, since {_when(alert.starts_at)})"
        if summary:
            line += f"\n   {_slack_escape(summary)}"
        lines.append(line)
    if len(notification.alerts) > MAX_LISTED_ALERTS:
        lines.append(f"…and {len(notification.alerts) - MAX_LISTED_ALERTS} more")
    if lines:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _truncate("\n".join(lines), SLACK_SECTION_LIMIT)}}
        )
    if notification.link:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open in Tessera"},
                        "url": notification.link,
                        "action_id": "open_in_tessera",
                    }
                ],
            }
        )
    # `text` is what push notifications and screen readers show.
    return {"text": headline, "blocks": blocks}


# --- Email -------------------------------------------------------------------------------------


def message_id(notification: Notification, domain: str) -> str:
    """Derived from the notification id, so a retried send is recognisably the same email."""
    return f"<notification.{notification.id}@{domain}>"


def _email_text(notification: Notification) -> str:
    lines = [notification.subject, ""]
    lines += [f"{caption}: {value}" for caption, value in notification.context_values()]
    lines.append(f"Severity: {notification.severity}")
    lines.append("")
    for alert in notification.alerts[:MAX_LISTED_ALERTS]:
        lines.append(f"- {alert.name or alert.fingerprint} ({alert.status_at(notification.created_at)})")
        lines.append(f"  since {_when(alert.starts_at)}")
        if summary := _alert_summary(alert):
            lines.append(f"  {summary}")
        lines.append("  " + ", ".join(f"{name}={value}" for name, value in sorted(alert.labels.items())))
    if len(notification.alerts) > MAX_LISTED_ALERTS:
        lines.append(f"...and {len(notification.alerts) - MAX_LISTED_ALERTS} more")
    if notification.link:
        lines += ["", f"Open in Tessera: {notification.link}"]
    return "\n".join(lines) + "\n"


def _email_html(notification: Notification) -> str:
    escape = html.escape
    context = "".join(
        f"<tr><th align='left'>{escape(caption)}</th><td>{escape(value)}</td></tr>"
        for caption, value in [*notification.context_values(), ("Severity", notification.severity)]
    )
    items = []
    for alert in notification.alerts[:MAX_LISTED_ALERTS]:
        labels = ", ".join(f"{name}={value}" for name, value in sorted(alert.labels.items()))
        summary = _alert_summary(alert)
        items.append(
            f"<li><strong>{escape(alert.name or alert.fingerprint)}</strong>"
            f" ({escape(alert.status_at(notification.created_at))}, since {escape(_when(alert.starts_at))})"
            + (f"<br>{escape(summary)}" if summary else "")
            + f"<br><small>{escape(labels)}</small></li>"
        )
    if len(notification.alerts) > MAX_LISTED_ALERTS:
        items.append(f"<li>…and {len(notification.alerts) - MAX_LISTED_ALERTS} more</li>")
    link = f"<p><a href='{escape(notification.link, quote=True)}'>Open in Tessera</a></p>" if notification.link else ""
    return (
        "<!doctype html><html><body>"
        f"<h2>{escape(notification.subject)}</h2>"
        f"<table>{context}</table>"
        f"<ul>{''.join(items)}</ul>{link}"
        "</body></html>"
    )


def render_email(notification: Notification, *, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """multipart/alternative (text, then HTML) with a Message-ID and Date fixed by the notification."""
    if not recipients:
        raise ValueError("an email needs at least one recipient")
    message = EmailMessage()
    message["Subject"] = notification.subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(notification.created_at.astimezone(UTC))
    sender_domain = parseaddr(sender)[1].rpartition("@")[2]
    message["Message-ID"] = message_id(notification, sender_domain or "tessera.invalid")
    message["X-Tessera-Notification-Id"] = notification.id
    message.set_content(_email_text(notification))
    message.add_alternative(_email_html(notification), subtype="html")
    return message


# --- Generic webhook ---------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def webhook_payload(notification: Notification) -> dict[str, Any]:
    """Versioned JSON document, shaped like Alertmanager's webhook body (snake_case)."""
    return {
        "version": WEBHOOK_PAYLOAD_VERSION,
        "notification_id": notification.id,
        "status": str(notification.status),
        "receiver": notification.receiver,
        "group_key": notification.group_key,
        "group_labels": dict(notification.group_labels),
        "common_labels": notification.common_labels,
        "common_annotations": notification.common_annotations,
        "severity": notification.severity,
        "link": notification.link,
        "created_at": _iso(notification.created_at),
        "alerts": [
            {
                "status": str(alert.status_at(notification.created_at)),
                "fingerprint": alert.fingerprint,
                "labels": dict(alert.labels),
                "annotations": dict(alert.annotations),
                "starts_at": _iso(alert.starts_at),
                "ends_at": _iso(alert.ends_at if alert.is_resolved_at(notification.created_at) else None),
                "url": alert.url,
            }
            for alert in notification.alerts
        ],
    }


def render_webhook(notification: Notification) -> bytes:
    # Compact UTF-8 JSON; orjson renders it several times faster than the stdlib, on every attempt.
    return orjson.dumps(webhook_payload(notification))
