"""Tessera Tracking.

Experiment tracking: experiments, runs, params, metrics, tags, artifacts; MLflow-compatible REST API.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from services.tracking.api import mlflow_artifacts, mlflow_tracking, mlflow_ui, mlflow_ui_api, native
from shared.core.settings import Settings
from shared.core.web import build_app


def _mounted(router: APIRouter, *prefixes: str) -> list[APIRouter]:
    """The same routes under each prefix (MLflow serves its API under /api and the /ajax-api alias)."""
    mounts = []
    for prefix in prefixes:
        mount = APIRouter(prefix=prefix)
        mount.include_router(router)
        mounts.append(mount)
    return mounts


# Matched before every other route of the app (Starlette tries routes in order).
SERVING_ROUTERS: list[APIRouter] = _mounted(mlflow_tracking.hot_router, "/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
ROUTERS: list[APIRouter] = [
    *_mounted(mlflow_tracking.router, "/api/2.0/mlflow", "/ajax-api/2.0/mlflow"),
    *_mounted(mlflow_artifacts.router, "/api/2.0/mlflow-artifacts", "/ajax-api/2.0/mlflow-artifacts"),
    *_mounted(mlflow_artifacts.server_info_router, "/api/3.0/mlflow", "/ajax-api/3.0/mlflow"),
    native.router,
    # MLflow's web UI: its page and bundles, and what it asks besides the REST API above.
    mlflow_ui.router,
    mlflow_ui_api.pages,
    *_mounted(mlflow_ui_api.api_v2, "/api/2.0/mlflow", "/ajax-api/2.0/mlflow"),
    *_mounted(mlflow_ui_api.api_v3, "/api/3.0/mlflow", "/ajax-api/3.0/mlflow"),
]


def create_app(settings: Settings | None = None) -> FastAPI:
    return build_app(
        settings,
        title="Tessera Tracking",
        service="tracking",
        serving_routers=SERVING_ROUTERS,
        routers=ROUTERS,
        description=__doc__,
    )
