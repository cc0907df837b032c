"""`tessera channels` and `tessera rules`: where notifications go, and which events reach them — the
notifier's REST API from a terminal."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tessera.commands.api import Api, CommandError, LimitOption, command_group, connected
from tessera.commands.output import Column, show_items, show_record

channels_app = command_group("Notification channels: webhooks, Slack, e-mail.")
rules_app = command_group("Routing rules: which events reach which channels, grouped how.")

CHANNELS = "/api/v1/channels"
RULES = "/api/v1/rules"

_CHANNEL_COLUMNS: list[Column] = [
    ("name", "name"),
    ("type", "type"),
    ("enabled", "enabled"),
    ("disabled because", "disabled_reason"),
    ("config", "config"),
    ("id", "id"),
]
_DELIVERY_FIELDS: list[Column] = [
    ("state", "state"),
    ("attempts", "attempts"),
    ("status code", "last_status_code"),
    ("error", "last_error"),
    ("delivered", "delivered_at"),
    ("delivery", "id"),
]


def _headers(pairs: list[str]) -> dict[str, str]:
    headers = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or not name:
            raise CommandError(f"--header takes NAME=VALUE, not {pair!r}")
        headers[name.strip()] = value
    return headers


@channels_app.command("create")
@connected
def create_channel(
    name: Annotated[str, typer.Argument(help="The channel's name")],
    kind: Annotated[str, typer.Option("--type", help="webhook, slack or email")] = "webhook",
    to: Annotated[
        str | None, typer.Option("--to", help="Receiver URL (webhook) or incoming-webhook URL (slack)")
    ] = None,
    header: Annotated[list[str], typer.Option(help="Extra header NAME=VALUE (webhook; repeat)")] = [],  # noqa: B006
    smtp_host: Annotated[str | None, typer.Option(help="SMTP server (email)")] = None,
    smtp_port: Annotated[int, typer.Option(help="SMTP port (email)")] = 587,
    sender: Annotated[str | None, typer.Option(help="From address (email)")] = None,
    recipient: Annotated[list[str], typer.Option(help="To address (email; repeat)")] = [],  # noqa: B006
    username: Annotated[str | None, typer.Option(help="SMTP user (email)")] = None,
    password: Annotated[str | None, typer.Option(help="SMTP password (email)")] = None,
    *,
    api: Api,
    as_json: bool,
) -> None:
    """Create a channel; a webhook's signing secret is printed once."""
    body: dict[str, Any] = {"name": name, "type": kind}
    if kind in ("webhook", "slack"):
        if to is None:
            raise CommandError(f"A {kind} channel needs --to URL")
        body |= {"url": to} | ({"headers": _headers(header)} if header else {})
    elif kind == "email":
        body |= {"smtp_host": smtp_host, "smtp_port": smtp_port, "sender": sender, "recipients": recipient}
        body |= {key: value for key, value in (("username", username), ("password", password)) if value}
    else:
        raise CommandError(f"Unknown channel type {kind!r}: webhook, slack or email")
    created = api.post(CHANNELS, body)
    fields = [*_CHANNEL_COLUMNS, ("signing secret (shown once)", "signing_secret")]
    show_record(created, fields, as_json=as_json, title=f"Channel {created['name']}")


@channels_app.command("list")
@connected
def list_channels(limit: LimitOption = None, *, api: Api, as_json: bool) -> None:
    """The organization's channels."""
    show_items(api.items(CHANNELS, limit=limit), _CHANNEL_COLUMNS, as_json=as_json, title="Channels")


@channels_app.command("test")
@connected
def test_channel(
    channel: Annotated[str, typer.Argument(help="Channel id or name")], *, api: Api, as_json: bool
) -> None:
    """Send a test message now; exits non-zero unless it was delivered."""
    found = api.find(CHANNELS, channel, "channel")
    delivery = api.post(f"{CHANNELS}/{found['id']}/test")
    show_record(delivery, _DELIVERY_FIELDS, as_json=as_json, title=f"Test message to {found['name']}")
    if delivery["state"] != "delivered":
        raise CommandError(f"The test message was not delivered ({delivery['state']}): {delivery.get('last_error')}")


def _rule_columns(channel_names: dict[str, str]) -> list[Column]:
    return [
        ("name", "name"),
        ("enabled", "enabled"),
        ("events", lambda row: row["event_types"] or "every event"),
        ("min severity", "min_severity"),
        ("matchers", lambda row: [matcher_text(matcher) for matcher in row["matchers"]]),
        ("channels", lambda row: [channel_names.get(channel, channel) for channel in row["channel_ids"]]),
        ("group wait (s)", "group_wait_s"),
        ("id", "id"),
    ]


def matcher_text(matcher: str | dict[str, Any]) -> str:
    """A stored matcher as Alertmanager writes it: `severity=~"critical|high"`."""
    if isinstance(matcher, str):
        return matcher
    return f'{matcher["name"]}{matcher.get("type", "=")}"{matcher["value"]}"'


def _channel_names(api: Api) -> dict[str, str]:
    return {channel["id"]: channel["name"] for channel in api.pages(CHANNELS)}


@rules_app.command("create")
@connected
def create_rule(
    name: Annotated[str, typer.Argument(help="The rule's name")],
    channel: Annotated[list[str], typer.Option(help="Channel id or name to notify (repeat)")],
    event_type: Annotated[list[str], typer.Option(help="Event type glob, e.g. alert.firing (repeat; none = all)")] = [],  # noqa: B006
    matcher: Annotated[list[str], typer.Option(help='Label matcher, e.g. severity=~"critical|high" (repeat)')] = [],  # noqa: B006
    min_severity: Annotated[str | None, typer.Option(help="critical, high, warning or info")] = None,
    group_by: Annotated[list[str], typer.Option(help="Label to group alerts by (repeat)")] = [],  # noqa: B006
    group_wait: Annotated[int | None, typer.Option(help="Seconds to wait before a new group's first notice")] = None,
    repeat_interval: Annotated[int | None, typer.Option(help="Seconds before repeating a firing group")] = None,
    *,
    api: Api,
    as_json: bool,
) -> None:
    """Create a rule sending matching events to channels."""
    channel_ids = [api.find(CHANNELS, ref, "channel")["id"] for ref in channel]
    body = {
        "name": name,
        "channel_ids": channel_ids,
        "event_types": event_type,
        "matchers": matcher,
        "group_by": group_by,
        "min_severity": min_severity,
        "group_wait_s": group_wait,
        "repeat_interval_s": repeat_interval,
    }
    created = api.post(RULES, {key: value for key, value in body.items() if value is not None})
    show_record(created, _rule_columns(_channel_names(api)), as_json=as_json, title=f"Rule {created['name']}")


@rules_app.command("list")
@connected
def list_rules(limit: LimitOption = None, *, api: Api, as_json: bool) -> None:
    """The organization's rules."""
    rules = api.items(RULES, limit=limit)
    show_items(rules, _rule_columns({} if as_json else _channel_names(api)), as_json=as_json, title="Rules")
