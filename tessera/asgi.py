"""ASGI entry points for uvicorn: `tessera.asgi:all` or one service, e.g. `tessera.asgi:tracking`."""

from __future__ import annotations

from tessera.platform import create_service_app


def __getattr__(name: str):
    # Built on first access, so importing this module for one service doesn't build the others.
    return create_service_app(name)
