"""Tessera Registry.

Organizations, users, projects, API keys, the audit log, and the model registry (native and MLflow-compatible).
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from shared.core.settings import Settings
from shared.core.web import build_app

ROUTERS: list[APIRouter] = []


def create_app(settings: Settings | None = None) -> FastAPI:
    return build_app(settings, title="Tessera Registry", service="registry", routers=ROUTERS, description=__doc__)
