"""Tessera Notifier.

Notification channels, rules, grouping, silences, inhibition and reliable delivery; Alertmanager's API v2.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from services.notifier.api import (
    alertmanager,
    channels,
    deliveries,
    events,
    held_alerts,
    inhibit_rules,
    notifications,
    rules,
    silences,
)
from shared.core.settings import Settings
from shared.core.web import build_app

ROUTERS: list[APIRouter] = [
    channels.router,
    rules.router,
    silences.router,
    held_alerts.router,
    inhibit_rules.router,
    notifications.router,
    deliveries.router,
    events.router,
    alertmanager.router,
]


def create_app(settings: Settings | None = None) -> FastAPI:
    return build_app(settings, title="Tessera Notifier", service="notifier", routers=ROUTERS, description=__doc__)
