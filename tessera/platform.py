"""All five services in one process and one port (the embedded default, like Loki's monolithic mode).

The routers are the very ones each service serves alone; only the process boundary differs.
"""

from __future__ import annotations

from fastapi import FastAPI

from shared.core.settings import Settings

# The services' apps send tasks (and the outbox relay's nudge after each commit) with the platform's
# Celery app.
from tessera import SERVICES, worker  # noqa: F401


def service_routers(name: str, kind: str = "ROUTERS"):
    """A service's routers: `ROUTERS`, or `SERVING_ROUTERS` (hot paths, matched before all others)."""
    module = __import__(f"services.{name}.app", fromlist=[kind])
    return getattr(module, kind, [])


def create_app(settings: Settings | None = None) -> FastAPI:
    # Imported here: the web layer loads the settings when imported, and whoever imports this module may
    # want to check them first, to report a bad value in one line.
    from shared.core.web import build_app
    from tessera.console.app import mount as mount_console

    app = build_app(
        settings,
        title="Tessera",
        service="platform",
        serving_routers=[router for name in SERVICES for router in service_routers(name, "SERVING_ROUTERS")],
        routers=[router for name in SERVICES for router in service_routers(name)],
        description="Experiment tracking, model registry, deployment, monitoring and notifications.",
    )
    # The console calls these very routers in-process, so it lives only where all of them are mounted.
    mount_console(app)
    return app


def create_service_app(name: str, settings: Settings | None = None) -> FastAPI:
    if name == "all":
        return create_app(settings)
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; one of {', '.join(SERVICES)} or 'all'")
    module = __import__(f"services.{name}.app", fromlist=["create_app"])
    return module.create_app(settings)
