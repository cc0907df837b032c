"""Monitors: the list with status, one monitor's drift share over time, its latest drift report (the
monitor's own HTML report, embedded) and "run a check now" with its progress."""

from __future__ import annotations

import json

from fastapi import APIRouter

from tessera.console import lookup
from tessera.console.web import PAGE_SIZE, ConsoleDep, parse_uuid

router = APIRouter(prefix="/monitors")
# The check-run states after which nothing more happens (services/monitor/domain/checks.py).
FINISHED = ("done", "failed", "insufficient_data")


@router.get("")
async def monitor_list(c: ConsoleDep, page_token: str | None = None, fragment: str | None = None):
    page = await c.api.page(
        "/api/v1/monitors",
        page_token=page_token,
        max_results=PAGE_SIZE,
        project_id=str(c.project["id"]) if c.project else None,
    )
    labels = await lookup.version_labels(c.request, [m["model_version_id"] for m in page.items])
    template = "monitors/rows.html" if fragment == "rows" else "monitors/list.html"
    return c.render(template, section="monitors", page=page, labels=labels)


@router.get("/{monitor_id}")
async def monitor_detail(c: ConsoleDep, monitor_id: str, report: str | None = None):
    monitor = await c.api.get(f"/api/v1/monitors/{parse_uuid(monitor_id)}")
    reports = (await c.api.page(f"/api/v1/monitors/{monitor_id}/reports", max_results=200)).items
    checks = (await c.api.page(f"/api/v1/monitors/{monitor_id}/checks", max_results=10)).items
    shown = next((r for r in reports if r["id"] == report), reports[0] if reports else None)
    # Oldest first for the chart: (unix seconds, drift share).
    series = [
        [_epoch(r["created_at"]), r["drift_share"]] for r in reversed(reports) if r["drift_share"] is not None
    ]
    labels = await lookup.version_labels(c.request, [monitor["model_version_id"]])
    return c.render(
        "monitors/detail.html",
        section="monitors",
        m=monitor,
        reports=reports,
        checks=checks,
        shown=shown,
        series=json.dumps(series),
        labels=labels,
        can_write=c.can_write(monitor["project_id"]),
    )


@router.post("/{monitor_id}/checks")
async def run_check_now(c: ConsoleDep, monitor_id: str):
    check = await c.api.post(f"/api/v1/monitors/{parse_uuid(monitor_id)}/checks")
    return c.render("monitors/check.html", m={"id": monitor_id}, check=check, finished=FINISHED)


@router.get("/{monitor_id}/checks/{check_id}")
async def check_progress(c: ConsoleDep, monitor_id: str, check_id: str):
    check = await c.api.get(f"/api/v1/monitors/{parse_uuid(monitor_id)}/checks/{parse_uuid(check_id)}")
    return c.render("monitors/check.html", m={"id": monitor_id}, check=check, finished=FINISHED)


def _epoch(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
