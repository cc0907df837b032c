"""Notification routing: rules (which events go to which channels, grouped how) and mute windows (recurring
times when a rule's notifications wait), each listed, created and deleted."""

from __future__ import annotations

import re
from functools import partial
from typing import Any

from fastapi import APIRouter

from tessera.console.api import ApiError
from tessera.console.web import PAGE_SIZE, Console, ConsoleDep, act_then_show, error_field, parse_uuid, with_status

rules_router = APIRouter(prefix="/rules")
mute_windows_router = APIRouter(prefix="/mute-windows")
SEVERITIES = ("critical", "high", "warning", "info")
# Choices for a rule's channels and mute windows: one page of each is plenty for a form.
CHOICES = 200


def _entries(text: Any, *, commas: bool = False) -> list[str]:
    """What a text box holds, one entry per line (or per comma, where values cannot contain one)."""
    return [part.strip() for part in re.split(r"[\n,]" if commas else r"\n", str(text or "")) if part.strip()]


# --- rules ----------------------------------------------------------------------------------------


@rules_router.get("")
async def rule_list(c: ConsoleDep, page_token: str | None = None, fragment: str | None = None):
    return await _rules(c, page_token=page_token, fragment=fragment)


async def _rules(
    c: Console,
    page_token: str | None = None,
    fragment: str | None = None,
    outcome: dict | None = None,
    errors: dict | None = None,
    values: dict | None = None,
):
    page = await c.api.page("/api/v1/rules", organization_id=c.org_id, page_token=page_token, max_results=PAGE_SIZE)
    channels = (await c.api.page("/api/v1/channels", organization_id=c.org_id, max_results=CHOICES)).items
    if fragment == "rows":
        return c.render("notifications/rule_rows.html", page=page, channel_names=_names(channels))
    windows = (await c.api.page("/api/v1/silences/mute-windows", organization_id=c.org_id, max_results=CHOICES)).items
    return c.render(
        "notifications/rules.html",
        section="rules",
        page=page,
        channels=channels,
        windows=windows,
        channel_names=_names(channels),
        severities=SEVERITIES,
        outcome=outcome,
        errors=errors or {},
        values=values or {"group_wait_s": "30", "channel_ids": [], "mute_window_ids": []},
    )


def _names(rows: list[dict]) -> dict[str, str]:
    return {str(row["id"]): row["name"] for row in rows}


@rules_router.post("")
async def create_rule(c: ConsoleDep):
    form = await c.request.form()
    values = {
        "name": str(form.get("name") or "").strip(),
        "event_types": str(form.get("event_types") or ""),
        "min_severity": str(form.get("min_severity") or ""),
        "matchers": str(form.get("matchers") or ""),
        "group_wait_s": str(form.get("group_wait_s") or "").strip(),
        "channel_ids": [str(v) for v in form.getlist("channel_ids")],
        "mute_window_ids": [str(v) for v in form.getlist("mute_window_ids")],
    }
    body: dict[str, Any] = {
        "name": values["name"],
        "organization_id": c.org_id,
        "event_types": _entries(values["event_types"], commas=True),
        "matchers": _entries(values["matchers"]),
        "channel_ids": values["channel_ids"],
        "mute_window_ids": values["mute_window_ids"],
        "min_severity": values["min_severity"] or None,
    }
    if values["group_wait_s"]:
        # Sent as typed: the API names the field when it is not a number.
        body["group_wait_s"] = values["group_wait_s"]
    try:
        rule = await c.api.post("/api/v1/rules", body)
    except ApiError as exc:
        return with_status(await _rules(c, errors={error_field(exc, "form"): exc.message}, values=values), exc.status)
    return await _rules(c, outcome={"kind": "ok", "text": f"Rule {rule['name']} created"})


@rules_router.post("/{rule_id}/delete")
async def delete_rule(c: ConsoleDep, rule_id: str):
    deleted = c.api.delete(f"/api/v1/rules/{parse_uuid(rule_id)}")
    return await act_then_show(deleted, partial(_rules, c), lambda rule: f"Rule {rule['name']} deleted")


# --- mute windows ---------------------------------------------------------------------------------


@mute_windows_router.get("")
async def mute_window_list(c: ConsoleDep, page_token: str | None = None, fragment: str | None = None):
    return await _mute_windows(c, page_token=page_token, fragment=fragment)


async def _mute_windows(
    c: Console,
    page_token: str | None = None,
    fragment: str | None = None,
    outcome: dict | None = None,
    errors: dict | None = None,
    values: dict | None = None,
):
    page = await c.api.page(
        "/api/v1/silences/mute-windows", organization_id=c.org_id, page_token=page_token, max_results=PAGE_SIZE
    )
    template = "notifications/mute_window_rows.html" if fragment == "rows" else "notifications/mute_windows.html"
    return c.render(
        template,
        section="mute-windows",
        page=page,
        outcome=outcome,
        errors=errors or {},
        values=values or {"location": "UTC"},
    )


@mute_windows_router.post("")
async def create_mute_window(c: ConsoleDep):
    """One Alertmanager time interval from the form: weekdays, a time of day, days of the month, a zone."""
    form = await c.request.form()
    keys = ("name", "weekdays", "start_time", "end_time", "days_of_month", "location")
    values = {key: str(form.get(key) or "").strip() for key in keys}
    interval: dict[str, Any] = {"location": values["location"] or "UTC"}
    if values["weekdays"]:
        interval["weekdays"] = _entries(values["weekdays"], commas=True)
    if values["days_of_month"]:
        interval["days_of_month"] = _entries(values["days_of_month"], commas=True)
    if values["start_time"] or values["end_time"]:
        interval["times"] = [{"start_time": values["start_time"], "end_time": values["end_time"]}]
    body = {"name": values["name"], "organization_id": c.org_id, "time_intervals": [interval]}
    try:
        window = await c.api.post("/api/v1/silences/mute-windows", body)
    except ApiError as exc:
        errors = {error_field(exc, "time_intervals"): exc.message}
        return with_status(await _mute_windows(c, errors=errors, values=values), exc.status)
    return await _mute_windows(c, outcome={"kind": "ok", "text": f"Mute window {window['name']} created"})


@mute_windows_router.post("/{window_id}/delete")
async def delete_mute_window(c: ConsoleDep, window_id: str):
    deleted = c.api.delete(f"/api/v1/silences/mute-windows/{parse_uuid(window_id)}")
    return await act_then_show(deleted, partial(_mute_windows, c), lambda _: "Mute window deleted")
