"""The Celery app of the platform: every service's tasks, subscriptions and beat entries in one app.

Each tasks module declares its tasks (`shared_task`, named "<svc>.<verb>") and a `DECLARATIONS`
(shared.core.celery_app.Declarations); this module is the one place that lists them, as tessera.platform
lists the services' routers. `celery -A tessera.worker:celery_app worker|beat` runs it (`tessera worker`,
`tessera beat` and `tessera up` do). The configuration is read on the app's first use, not at import, so
importing this module reads no settings and writes no file.
"""

from __future__ import annotations

import importlib
from typing import Any

from celery import Celery

from shared.core import events
from shared.core.celery_app import Declarations, celery_config, install_relay_nudge
from shared.core.settings import get_settings

TASK_MODULES = (
    "shared.core.tasks",
    "services.deployer.tasks",
    "services.monitor.tasks",
    "services.notifier.tasks",
)


def declarations() -> list[Declarations]:
    """Every tasks module's declarations; importing a module also registers its tasks with the app."""
    return [importlib.import_module(name).DECLARATIONS for name in TASK_MODULES]


def _configuration() -> dict[str, Any]:
    declared = declarations()
    for module in declared:
        for pattern, task in module.subscriptions:
            events.subscribe(pattern, task)
        for pattern, task in module.direct_subscriptions:
            events.subscribe(pattern, task, direct=True)
    return celery_config(get_settings(), include=TASK_MODULES, declarations=declared)


celery_app = Celery("tessera", set_as_current=False)
celery_app.add_defaults(_configuration)
# The app every thread of this process sends tasks with (shared_task and current_app resolve to it).
celery_app.set_default()
install_relay_nudge()
