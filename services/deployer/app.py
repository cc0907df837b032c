"""Tessera Deployer.

Deployments of model versions: local model servers, canary, shadow, history and rollback; KServe manifests.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from services.deployer.api import deployments, gateway
from shared.core.settings import Settings
from shared.core.web import build_app

# The gateway first: routes are matched in order, and its paths carry the serving traffic.
ROUTERS: list[APIRouter] = [gateway.router, deployments.router]


def create_app(settings: Settings | None = None) -> FastAPI:
    return build_app(settings, title="Tessera Deployer", service="deployer", routers=ROUTERS, description=__doc__)
