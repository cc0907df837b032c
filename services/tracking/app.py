"""Tessera Tracking.

Experiment tracking: experiments, runs, params, metrics, tags, artifacts; MLflow-compatible REST API.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from shared.core.settings import Settings
from shared.core.web import build_app

ROUTERS: list[APIRouter] = []


def create_app(settings: Settings | None = None) -> FastAPI:
    return build_app(settings, title="Tessera Tracking", service="tracking", routers=ROUTERS, description=__doc__)
