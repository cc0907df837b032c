"""Tessera Registry.

Organizations, users, projects, API keys, the audit log, and the model registry (native and MLflow-compatible).
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from services.registry.api import (
    api_keys,
    audit_logs,
    auth,
    dead_letters,
    mlflow_registry,
    model_versions,
    models,
    organizations,
    projects,
    users,
)
from shared.core.settings import Settings
from shared.core.web import build_app

# Matched before every other route of the app (Starlette tries routes in order).
SERVING_ROUTERS: list[APIRouter] = [mlflow_registry.hot_router]
ROUTERS: list[APIRouter] = [
    # identity, tenancy and the audit log
    auth.router,
    users.router,
    organizations.router,
    projects.router,
    api_keys.router,
    audit_logs.router,
    dead_letters.router,
    # the model registry, native and MLflow's REST API
    models.router,
    model_versions.router,
    mlflow_registry.router,
]


def create_app(settings: Settings | None = None) -> FastAPI:
    return build_app(
        settings,
        title="Tessera Registry",
        service="registry",
        serving_routers=SERVING_ROUTERS,
        routers=ROUTERS,
        description=__doc__,
    )
