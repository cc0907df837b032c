"""The command line for daily work: thin clients of a running Tessera's native REST API (httpx), one
command group per resource. `tessera/cli.py` mounts them next to the commands that run the platform."""

from __future__ import annotations

import typer

from tessera.commands import alerts, deployments, monitors, notifications

GROUPS: dict[str, typer.Typer] = {
    "deployments": deployments.app,
    "monitors": monitors.app,
    "channels": notifications.channels_app,
    "rules": notifications.rules_app,
    "alerts": alerts.app,
}


def register(app: typer.Typer) -> None:
    for name, group in GROUPS.items():
        app.add_typer(group, name=name)
