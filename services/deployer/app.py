"""Tessera Deployer.

Deployments of model versions: local model servers, canary, shadow, history and rollback; KServe manifests.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from services.deployer.api import deployments, gateway
from shared.core.settings import Settings
from shared.core.web import build_app

# Routes are matched in order and the gateway's paths carry the serving traffic: every app that includes the
# gateway (this one, and `tessera up`/`serve all`) matches its routes before any other.
SERVING_ROUTERS: list[APIRouter] = [gateway.router]
ROUTERS: list[APIRouter] = [deployments.router]


def create_app(settings: Settings | None = None) -> FastAPI:
    return build_app(
        settings,
        title="Tessera Deployer",
        service="deployer",
        serving_routers=SERVING_ROUTERS,
        routers=ROUTERS,
        description=__doc__,
    )
