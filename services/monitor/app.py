"""Tessera Monitor.

Model monitoring: prediction logging, scheduled drift checks, drift reports and alerts.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from services.monitor.api import alerts, monitors, reports
from shared.core.settings import Settings
from shared.core.web import build_app

ROUTERS: list[APIRouter] = [monitors.router, reports.router, alerts.router]


def create_app(settings: Settings | None = None) -> FastAPI:
    return build_app(settings, title="Tessera Monitor", service="monitor", routers=ROUTERS, description=__doc__)
