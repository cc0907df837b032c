"""`tessera alerts`: what the monitors raised — list, acknowledge, resolve, and silence its notifications."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from tessera.commands.api import Api, CommandError, LimitOption, command_group, connected
from tessera.commands.notifications import matcher_text
from tessera.commands.output import Column, show_items, show_record

app = command_group("Alerts raised by monitor checks: list, acknowledge, resolve, silence.")

PATH = "/api/v1/alerts"
AlertArgument = Annotated[str, typer.Argument(help="Alert id")]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

_COLUMNS: list[Column] = [
    ("status", "status"),
    ("severity", "severity"),
    ("title", "title"),
    ("labels", "labels"),
    ("started", "started_at"),
    ("id", "id"),
]
_FIELDS: list[Column] = [
    *_COLUMNS,
    ("kind", "kind"),
    ("monitor", "monitor_id"),
    ("report", "report_id"),
    ("acknowledged", "acknowledged_at"),
    ("resolved", "resolved_at"),
]


def duration(text: str) -> timedelta:
    """`90`, `30m`, `2h`, `1d`, `1w` (also combined: `1h30m`)."""
    parts = re.fullmatch(r"(?:\d+[smhdw]?)+", text.strip())
    if parts is None or not text.strip():
        raise CommandError(f"Cannot read the duration {text!r}: use e.g. 90s, 30m, 2h, 1d")
    seconds = sum(int(number) * _UNITS[unit or "s"] for number, unit in re.findall(r"(\d+)([smhdw]?)", text))
    return timedelta(seconds=seconds)


@app.command("list")
@connected
def list_alerts(
    status: Annotated[str | None, typer.Option(help="firing, acknowledged or resolved")] = None,
    monitor: Annotated[str | None, typer.Option(help="Only this monitor's (id)")] = None,
    limit: LimitOption = None,
    *,
    api: Api,
    as_json: bool,
) -> None:
    """Alerts, latest first."""
    items = api.items(PATH, limit=limit, status=status, monitor_id=monitor)
    show_items(items, _COLUMNS, as_json=as_json, title="Alerts")


def _act(api: Api, alert: str, action: str, as_json: bool) -> None:
    changed = api.post(f"{PATH}/{alert}/{action}")
    show_record(changed, _FIELDS, as_json=as_json, title=f"Alert {changed['id']}")


@app.command()
@connected
def ack(alert: AlertArgument, *, api: Api, as_json: bool) -> None:
    """Acknowledge an alert (it stays open until a clean check or `resolve`)."""
    _act(api, alert, "acknowledge", as_json)


@app.command()
@connected
def resolve(alert: AlertArgument, *, api: Api, as_json: bool) -> None:
    """Resolve an alert by hand."""
    _act(api, alert, "resolve", as_json)


def alert_matchers(alert: dict[str, Any]) -> list[dict[str, str]]:
    """Matchers for the notifications of exactly this alert's kind and target (its name and every label)."""
    labels = {"alertname": f"monitor_{alert['kind']}", **alert["labels"]}
    return [{"name": name, "type": "=", "value": str(value)} for name, value in labels.items()]


@app.command()
@connected
def silence(
    alert: AlertArgument,
    duration_text: Annotated[str, typer.Option("--for", help="How long, e.g. 30m, 2h, 1d")] = "2h",
    comment: Annotated[str, typer.Option(help="Why (shown with the silence)")] = "silenced from the command line",
    *,
    api: Api,
    as_json: bool,
) -> None:
    """Silence this alert's notifications for a while (a silence on its name and labels)."""
    ends_at = datetime.now(UTC) + duration(duration_text)
    found = api.get(f"{PATH}/{alert}")
    created = api.post(
        "/api/v1/silences",
        {"matchers": alert_matchers(found), "ends_at": ends_at.isoformat(), "comment": comment},
    )
    fields: list[Column] = [
        ("state", "state"),
        ("until", "ends_at"),
        ("matchers", lambda row: [matcher_text(matcher) for matcher in row["matchers"]]),
        ("comment", "comment"),
        ("silence", "id"),
    ]
    show_record(created, fields, as_json=as_json, title=f"Silence for alert {found['id']}")
