"""Notifications: channels (create with the signing secret shown once, edit — the secret never shown again —,
send a test and see the result), each channel's delivery log with every attempt's status and error, and
"redeliver"."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter

from tessera.console.api import ApiError
from tessera.console.web import PAGE_SIZE, Console, ConsoleDep, act_then_show, error_field, parse_uuid, with_status

router = APIRouter(prefix="/channels")
CHANNEL_TYPES = ("webhook", "slack")


@router.get("")
async def channel_list(c: ConsoleDep, page_token: str | None = None, fragment: str | None = None):
    return await _channels(c, page_token=page_token, fragment=fragment)


async def _channels(
    c: Console,
    created: dict | None = None,
    errors: dict | None = None,
    values: dict | None = None,
    page_token: str | None = None,
    fragment: str | None = None,
):
    page = await c.api.page("/api/v1/channels", organization_id=c.org_id, page_token=page_token, max_results=PAGE_SIZE)
    template = "notifications/channel_rows.html" if fragment == "rows" else "notifications/channels.html"
    return c.render(
        template,
        section="notifications",
        page=page,
        created=created,
        errors=errors or {},
        values=values or {"type": "webhook"},
        types=CHANNEL_TYPES,
    )


@router.post("")
async def create_channel(c: ConsoleDep):
    form = await c.request.form()
    values = {key: str(form.get(key) or "").strip() for key in ("name", "type", "url")}
    body = {"name": values["name"], "type": values["type"], "url": values["url"], "organization_id": c.org_id}
    try:
        created = await c.api.post("/api/v1/channels", body)
    except ApiError as exc:
        return with_status(await _channels(c, errors={exc.field or "form": exc.message}, values=values), exc.status)
    return await _channels(c, created=created)


@router.get("/{channel_id}")
async def channel_detail(c: ConsoleDep, channel_id: str, page_token: str | None = None, fragment: str | None = None):
    return await _channel(c, channel_id, page_token, fragment)


async def _channel(
    c: Console,
    channel_id: str,
    page_token: str | None = None,
    fragment: str | None = None,
    outcome: dict | None = None,
    errors: dict | None = None,
    values: dict | None = None,
):
    channel = await c.api.get(f"/api/v1/channels/{parse_uuid(channel_id)}")
    page = await c.api.page("/api/v1/deliveries", channel_id=channel_id, page_token=page_token, max_results=PAGE_SIZE)
    template = "notifications/delivery_rows.html" if fragment == "rows" else "notifications/channel.html"
    values = values or {"name": channel["name"], "enabled": channel["enabled"]}
    return c.render(
        template, section="notifications", ch=channel, page=page, outcome=outcome, errors=errors or {}, values=values
    )


@router.post("/{channel_id}")
async def edit_channel(c: ConsoleDep, channel_id: str):
    """Name, on/off and a new URL; a URL left empty is kept (it is a secret: never shown, never sent back)."""
    form = await c.request.form()
    values = {
        "name": str(form.get("name") or "").strip(),
        "url": str(form.get("url") or "").strip(),
        "enabled": form.get("enabled") == "on",
    }
    body = {"name": values["name"], "enabled": values["enabled"]}
    if values["url"]:
        body["url"] = values["url"]
    try:
        await c.api.patch(f"/api/v1/channels/{parse_uuid(channel_id)}", body)
    except ApiError as exc:
        if exc.status == 404:
            raise
        # The API checks all but the URL before the domain does: an unnamed refusal is the URL's.
        response = await _channel(c, channel_id, errors={error_field(exc, "url"): exc.message}, values=values)
        return with_status(response, exc.status)
    return await _channel(c, channel_id, outcome={"kind": "ok", "text": "Channel saved"})


@router.post("/{channel_id}/test")
async def send_test(c: ConsoleDep, channel_id: str):
    try:
        delivery = await c.api.post(f"/api/v1/channels/{parse_uuid(channel_id)}/test")
    except ApiError as exc:
        if exc.status == 404:
            raise
        return with_status(await _channel(c, channel_id, outcome={"kind": "error", "text": exc.message}), exc.status)
    ok = delivery["state"] == "delivered"
    text = (
        f"Test message delivered (HTTP {delivery['last_status_code']})"
        if ok
        else f"Test message {delivery['state']}: {delivery['last_error'] or delivery['last_status_code']}"
    )
    return await _channel(c, channel_id, outcome={"kind": "ok" if ok else "error", "text": text})


@router.get("/{channel_id}/deliveries/{delivery_id}")
async def delivery_attempts(c: ConsoleDep, channel_id: str, delivery_id: str):
    delivery = await c.api.get(f"/api/v1/deliveries/{parse_uuid(delivery_id)}")
    return c.render("notifications/attempts.html", dl=delivery)


@router.post("/{channel_id}/deliveries/{delivery_id}/redeliver")
async def redeliver(c: ConsoleDep, channel_id: str, delivery_id: str):
    try:
        delivery = await c.api.post(f"/api/v1/deliveries/{parse_uuid(delivery_id)}/redeliver")
    except ApiError as exc:
        return c.render("notifications/attempts.html", dl=None, error=exc.message, status_code=exc.status)
    return c.render("notifications/attempts.html", dl=delivery, redelivered=True)


silences_router = APIRouter(prefix="/silences")


@silences_router.get("")
async def silence_list(c: ConsoleDep, page_token: str | None = None, fragment: str | None = None):
    return await _silences(c, page_token, fragment)


async def _silences(
    c: Console, page_token: str | None = None, fragment: str | None = None, outcome: dict | None = None
):
    page = await c.api.page("/api/v1/silences", organization_id=c.org_id, page_token=page_token, max_results=PAGE_SIZE)
    template = "notifications/silence_rows.html" if fragment == "rows" else "notifications/silences.html"
    return c.render(template, section="silences", page=page, outcome=outcome)


@silences_router.post("/{silence_id}/expire")
async def expire_silence(c: ConsoleDep, silence_id: str):
    expired = c.api.delete(f"/api/v1/silences/{parse_uuid(silence_id)}")
    return await act_then_show(expired, partial(_silences, c), lambda _: "Silence expired")
