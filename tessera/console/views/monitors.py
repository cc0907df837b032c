"""Monitors: the list with status, one monitor's drift share over time, each column's drift over its latest
reports, quality metrics where ground truth was logged, its latest drift report (the monitor's own HTML
report, embedded) and "run a check now" with its progress."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import APIRouter

from tessera.console import lookup
from tessera.console.web import PAGE_SIZE, Console, ConsoleDep, parse_uuid

router = APIRouter(prefix="/monitors")
# The check-run states after which nothing more happens (services/monitor/domain/checks.py).
FINISHED = ("done", "failed", "insufficient_data")
# How many of the latest reports the per-column and quality tables span, and how many columns they show
# (the most drifted first): each report is one API call for its full JSON.
HISTORY_REPORTS = 12
HISTORY_COLUMNS = 25


@dataclass
class History:
    """Per-column drift and quality metrics over the latest reports, oldest first."""

    reports: list[dict[str, Any]] = field(default_factory=list)
    # column name -> one cell per report: the column's entry in that report, or None.
    columns: dict[str, list[dict[str, Any] | None]] = field(default_factory=dict)
    more_columns: int = 0
    # (report, its quality section), for the reports that measured quality.
    quality: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)


async def _history(c: Console, reports: list[dict[str, Any]]) -> History:
    recent = list(reversed(reports[:HISTORY_REPORTS]))
    full = await asyncio.gather(*(c.api.get(f"/api/v1/drift-reports/{r['id']}") for r in recent))
    bodies = [f["report"] for f in full]
    names = {name for body in bodies for name in body.get("columns", {})}
    latest = next((body["columns"] for body in reversed(bodies) if body.get("columns")), {})

    def rank(name: str) -> tuple:
        # Drifted in the latest report first, then by how far from its threshold, then by name.
        column = latest.get(name) or {}
        score, threshold = column.get("score"), column.get("threshold")
        margin = abs(score - threshold) if isinstance(score, float) and isinstance(threshold, float) else 0.0
        return (not column.get("drift"), -margin, name)

    shown = sorted(names, key=rank)
    history = History(reports=recent, more_columns=max(0, len(shown) - HISTORY_COLUMNS))
    for name in shown[:HISTORY_COLUMNS]:
        history.columns[name] = [body.get("columns", {}).get(name) for body in bodies]
    for report, body in zip(recent, bodies, strict=True):
        if body.get("quality"):
            history.quality.append((report, body["quality"]))
    history.metrics = sorted({m for _, q in history.quality for m in (q.get("metrics") or {})})
    return history


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
    series = [[_epoch(r["created_at"]), r["drift_share"]] for r in reversed(reports) if r["drift_share"] is not None]
    labels = await lookup.version_labels(c.request, [monitor["model_version_id"]])
    history = await _history(c, reports)
    return c.render(
        "monitors/detail.html",
        section="monitors",
        m=monitor,
        reports=reports,
        checks=checks,
        shown=shown,
        series=json.dumps(series),
        history=history,
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
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
