"""The one Celery application: every service's tasks, one configuration, one beat schedule.

Defaults are chosen for "lose nothing": a task is acknowledged only after it ran (acks_late), and a
task whose worker died is given back to the broker (reject_on_worker_lost) — acks_late alone does not
do that. Prefetch is 1 so one slow delivery cannot hold other tasks hostage. Results are not stored:
progress and outcomes live in the database, which is the source of truth.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta

import structlog
from celery import Celery
from celery.signals import worker_process_init
from kombu import Exchange, Queue
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.core import events, quarantine
from shared.core.settings import Settings, get_settings
from shared.db.session import Database, get_database

_log = structlog.get_logger(__name__)

TASK_MODULES = [
    "shared.core.tasks",
    "services.registry.tasks",
    "services.tracking.tasks",
    "services.deployer.tasks",
    "services.monitor.tasks",
    "services.notifier.tasks",
]

# Deliveries have a queue of their own: they never wait behind a backlog of events or checks, and a
# deployment may give them dedicated workers (`tessera worker --queues notifier.dispatch`). A worker
# started without `-Q` consumes every queue.
DEFAULT_QUEUE = "celery"
DISPATCH_QUEUE = "notifier.dispatch"

# Beat only fans out; each periodic task makes itself idempotent against a second beat process.
_NOTIFIER_TICKS = get_settings()
BEAT_SCHEDULE: dict[str, dict] = {
    "events-relay": {"task": "events.relay", "schedule": timedelta(seconds=2)},
    "events-prune": {"task": "events.prune", "schedule": timedelta(hours=1), "options": {"expires": 3600}},
    # Group timers and the retry sweeper; a tick that waited longer than its interval is dropped.
    "notifier-flush": {
        "task": "notifier.flush",
        "schedule": timedelta(seconds=_NOTIFIER_TICKS.notifier_flush_interval_s),
        "options": {"expires": _NOTIFIER_TICKS.notifier_flush_interval_s},
    },
    # Due monitor checks are read from the database at every tick; each slot is claimed once there.
    "monitor-schedule": {
        "task": "monitor.schedule_due_checks",
        "schedule": timedelta(seconds=_NOTIFIER_TICKS.monitor_schedule_interval_s),
        "options": {"expires": _NOTIFIER_TICKS.monitor_schedule_interval_s},
    },
    "notifier-sweep": {
        "task": "notifier.sweep",
        "schedule": timedelta(seconds=_NOTIFIER_TICKS.notifier_sweep_interval_s),
        "options": {"expires": _NOTIFIER_TICKS.notifier_sweep_interval_s},
    },
    # Restarts crashed model servers; a second beat skips the server rows the first one holds.
    "deployer-supervise": {
        "task": "deployer.supervise",
        "schedule": timedelta(seconds=_NOTIFIER_TICKS.deployer_supervise_interval_s),
        "options": {"expires": _NOTIFIER_TICKS.deployer_supervise_interval_s},
    },
}


def _transport_options(settings: Settings) -> dict:
    if settings.broker_url.startswith("filesystem"):
        folder = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # Otherwise kombu keeps its exchange table in ./control, wherever the process was started.
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    options: dict = {
        # Longer than any task may run, so a slow task is not redelivered to a second worker meanwhile.
        "visibility_timeout": 3600,
        # An unreachable host fails a connection within seconds instead of the system's minutes.
        "socket_connect_timeout": 2,
    }
    if settings.broker_key_prefix:
        options["global_keyprefix"] = settings.broker_key_prefix
    return options


def create_celery(settings: Settings) -> Celery:
    app = Celery("tessera", broker=settings.broker_url, include=TASK_MODULES)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=DEFAULT_QUEUE,
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in (DEFAULT_QUEUE, DISPATCH_QUEUE)],
        task_routes={"notifier.dispatch": {"queue": DISPATCH_QUEUE}},
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(settings),
        beat_schedule=BEAT_SCHEDULE,
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        worker_hijack_root_logger=False,
        timezone="UTC",
        enable_utc=True,
    )
    app.conf.tessera_settings = settings
    return app


celery_app = create_celery(get_settings())


def settings() -> Settings:
    return celery_app.conf.tessera_settings


def database() -> Database:
    s = settings()
    return get_database(s.database_url, s.sql_echo, s.db_pool_size)


# Failures to reach the broker: not any item's fault.
BROKER_ERRORS = (KombuOperationalError, RedisConnectionError, RedisTimeoutError)


def run_isolated(
    consumer: quarantine.Consumer, item_ids: Sequence[str | uuid.UUID], process: Callable[[list[uuid.UUID]], None]
) -> None:
    """`quarantine.run_isolated` with this app's database, settings and queue: a failing item is
    retried alone by sending the consumer's task with just its id."""
    current = settings()

    def requeue(item_id: uuid.UUID, countdown_s: float) -> None:
        celery_app.send_task(consumer.task, [[str(item_id)]], countdown=countdown_s)

    quarantine.run_isolated(
        consumer,
        item_ids,
        process,
        session_scope=database().session_scope,
        requeue=requeue,
        max_attempts=current.quarantine_max_attempts,
        retry_base_s=current.quarantine_retry_base_s,
        broker_errors=BROKER_ERRORS,
    )


# Commits within this window share one relay run, which starts when the window closes: a burst is
# relayed in a few large batches (few messages, few transactions) instead of one per commit.
RELAY_WINDOW_S = 0.05
_RELAY_WINDOW_KEY = "tessera:outbox-relay-window"


def _queue_relay() -> None:
    # No publish retries: the periodic relay catches up with what a down broker missed.
    with celery_app.pool.acquire(block=True) as connection:
        if connection.transport.driver_type == "redis":
            # The first commit of a window opens it and queues the relay for its end; commits inside
            # it find the key and need nothing: they committed before the key expires, so before
            # the relay starts, and it publishes their events.
            window_ms = int(RELAY_WINDOW_S * 1000)
            if not connection.default_channel.client.set(_RELAY_WINDOW_KEY, 1, nx=True, px=window_ms):
                return
            celery_app.send_task("events.relay", countdown=RELAY_WINDOW_S, retry=False, connection=connection)
            return
        celery_app.send_task("events.relay", retry=False, connection=connection)


class _RelayNudger:
    """Queues the relay from a thread of its own, so a commit never waits on the broker: the committing
    thread only sets a flag (microseconds), and nudges made while one is under way share the next one.
    With the broker down a nudge fails in the background and beat's periodic relay publishes the events
    once it is back. One thread per process, started on first use (a forked worker starts its own)."""

    def __init__(self) -> None:
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()

    def __call__(self) -> None:
        if self._pid != os.getpid():
            self._start()
        self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._wake = threading.Event()
            threading.Thread(target=self._run, args=(self._wake,), name="outbox-relay-nudger", daemon=True).start()
            self._pid = os.getpid()

    @staticmethod
    def _run(wake: threading.Event) -> None:
        while True:
            wake.wait()
            wake.clear()
            try:
                _queue_relay()
            except Exception as exc:
                _log.warning("outbox.nudge_failed", error=f"{type(exc).__name__}: {exc}")


events.on_events_committed(_RelayNudger())


@worker_process_init.connect
def _fresh_connections_after_fork(**_kwargs) -> None:
    # Connections inherited from the parent across fork() must not be shared: start a new pool.
    get_database.cache_clear()
