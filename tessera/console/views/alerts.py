"""Alerts: firing and resolved, filtered by status, severity, project and label; acknowledge, resolve, and
silence for a while with matchers prefilled from the alert's labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter

from tessera.console.api import ApiError, Page
from tessera.console.web import PAGE_SIZE, Console, ConsoleDep, parse_uuid, with_status

router = APIRouter(prefix="/alerts")
DURATIONS = {"1h": timedelta(hours=1), "4h": timedelta(hours=4), "1d": timedelta(days=1), "1w": timedelta(weeks=1)}
SEVERITIES = ("critical", "high", "warning", "info")


async def _list(c: Console, status: str | None, severity: str | None, label: str | None, page_token: str | None):
    return await c.api.page(
        "/api/v1/alerts",
        page_token=page_token,
        max_results=PAGE_SIZE,
        status=status,
        severity=severity,
        label=label,
        project_id=str(c.project["id"]) if c.project else None,
    )


@router.get("")
async def alert_list(
    c: ConsoleDep,
    status: str | None = None,
    severity: str | None = None,
    label: str | None = None,
    page_token: str | None = None,
    fragment: str | None = None,
):
    filters = {"status": status or "", "severity": severity or "", "label": label or ""}
    errors = {}
    try:
        page = await _list(c, status, severity, label, page_token)
    except ApiError as exc:
        if exc.status == 404:
            raise
        page, errors = Page([]), {exc.field or "label": exc.message}
    template = "alerts/rows.html" if fragment == "rows" else "alerts/list.html"
    return c.render(
        template,
        section="alerts",
        page=page,
        filters=filters,
        severities=SEVERITIES,
        errors=errors,
        status_code=422 if errors else 200,
    )


@router.get("/{alert_id}")
async def alert_detail(c: ConsoleDep, alert_id: str):
    return await _detail(c, alert_id)


async def _detail(c: Console, alert_id: str, outcome: dict | None = None, errors: dict | None = None):
    alert = await c.api.get(f"/api/v1/alerts/{parse_uuid(alert_id)}")
    held = await _held(c, alert) if alert["status"] != "resolved" else None
    matchers = "\n".join(f'{k}="{v}"' for k, v in sorted(alert["labels"].items()))
    return c.render(
        "alerts/detail.html",
        section="alerts",
        a=alert,
        held=held,
        outcome=outcome,
        errors=errors or {},
        matchers=matchers,
        durations=DURATIONS,
        can_write=c.can_write(alert["project_id"]),
    )


async def _held(c: Console, alert: dict) -> dict | None:
    """How the notifier holds the alert: routed by which rules, silenced or inhibited by what. None when it
    holds none (no rule routes the alert) or the user may not read notifications."""
    try:
        return await c.api.get(
            f"/api/v1/held-alerts/{alert['fingerprint']}", organization_id=str(c.org["id"]) if c.org else None
        )
    except ApiError as exc:
        if exc.status in (403, 404):
            return None
        raise


@router.post("/{alert_id}/{action}")
async def alert_action(c: ConsoleDep, alert_id: str, action: str):
    alert_uuid = parse_uuid(alert_id)
    form = await c.request.form()
    try:
        if action in ("acknowledge", "resolve"):
            await c.api.post(f"/api/v1/alerts/{alert_uuid}/{action}")
            text = "Acknowledged" if action == "acknowledge" else "Resolved"
        elif action == "silence":
            text = await _silence(c, form)
        else:
            raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No action '{action}'")
    except ApiError as exc:
        if exc.status == 404:
            raise
        outcome = {"kind": "error", "text": exc.message}
        return with_status(await _detail(c, alert_id, outcome, {exc.field or "": exc.message}), exc.status)
    return await _detail(c, alert_id, {"kind": "ok", "text": text})


async def _silence(c: Console, form) -> str:
    duration = DURATIONS.get(str(form.get("duration")))
    if duration is None:
        raise ApiError(422, "INVALID_PARAMETER_VALUE", "Choose how long to silence", "duration")
    matchers = [line.strip() for line in str(form.get("matchers") or "").splitlines() if line.strip()]
    ends_at = datetime.now(UTC) + duration
    body = {
        "organization_id": str(c.org["id"]) if c.org else None,
        "matchers": matchers,
        "ends_at": ends_at.isoformat(),
        "comment": str(form.get("comment") or ""),
    }
    silence = await c.api.post("/api/v1/silences", body)
    return f"Silenced until {silence['ends_at'][:16].replace('T', ' ')} UTC"
