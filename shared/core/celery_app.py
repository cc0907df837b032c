"""Celery, configured once: the settings every worker runs with, the declarations tasks modules make, the
outbox relay's nudge. This module knows no service: tessera.worker assembles the app from the services'
tasks modules, each of which declares its tasks with `shared_task` and the rest with `Declarations`.

Defaults are chosen for "lose nothing": a task is acknowledged only after it ran (acks_late), and a
task whose worker died is given back to the broker (reject_on_worker_lost) — acks_late alone does not
do that. Prefetch is 1 so one slow delivery cannot hold other tasks hostage. Results are not stored:
progress and outcomes live in the database, which is the source of truth.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from celery import current_app
from celery.signals import worker_process_init
from kombu import Exchange, Queue
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.core import events, quarantine
from shared.core.settings import Settings
from shared.db.session import Database, get_database

_log = structlog.get_logger(__name__)

# Tasks go here unless a tasks module routes them to a queue of its own (`Declarations.routes`). A worker
# started without `-Q` consumes every queue.
DEFAULT_QUEUE = "celery"


@dataclass(frozen=True)
class Periodic:
    """A beat entry: send `task` every `every_s(settings)` seconds. Beat only fans out; each periodic task
    makes itself idempotent against a second beat process. With `expires`, a tick that waited longer than
    its interval is dropped (the next one does the same work)."""

    name: str
    task: str
    every_s: Callable[[Settings], float]
    expires: bool = True

    def entry(self, settings: Settings) -> dict[str, Any]:
        seconds = self.every_s(settings)
        entry: dict[str, Any] = {"task": self.task, "schedule": timedelta(seconds=seconds)}
        if self.expires:
            entry["options"] = {"expires": seconds}
        return entry


@dataclass(frozen=True)
class Declarations:
    """What a tasks module adds to the Celery app besides its tasks (declared with `shared_task`): the event
    types its tasks subscribe to (pattern, task name), its beat entries, and tasks that have a queue of
    their own (task name -> queue). The app is assembled from every module's declarations by tessera.worker."""

    subscriptions: Sequence[tuple[str, str]] = ()
    # Subscriptions whose task takes events straight from the process that committed them (events.py).
    direct_subscriptions: Sequence[tuple[str, str]] = ()
    periodic: Sequence[Periodic] = ()
    routes: Mapping[str, str] = field(default_factory=dict)


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


def celery_config(
    settings: Settings, *, include: Sequence[str], declarations: Sequence[Declarations]
) -> dict[str, Any]:
    """The Celery configuration of an app with the tasks of `include`, whose modules declared `declarations`."""
    routes = {task: queue for declared in declarations for task, queue in declared.routes.items()}
    queues = [DEFAULT_QUEUE, *sorted(set(routes.values()) - {DEFAULT_QUEUE})]
    return {
        "broker_url": settings.broker_url,
        "include": list(include),
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": DEFAULT_QUEUE,
        "task_queues": [Queue(name, Exchange(name), routing_key=name) for name in queues],
        "task_routes": {task: {"queue": queue} for task, queue in routes.items()},
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": _transport_options(settings),
        "beat_schedule": {
            periodic.name: periodic.entry(settings) for declared in declarations for periodic in declared.periodic
        },
        "beat_schedule_filename": str(settings.data_dir / "celerybeat-schedule"),
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
        "enable_utc": True,
        "tessera_settings": settings,
    }


def settings() -> Settings:
    """The settings the running Celery app was configured with."""
    return current_app.conf.tessera_settings


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
    quarantine.run_isolated(consumer, item_ids, process, **_isolation(consumer))


def run_screened(
    consumer: quarantine.Consumer,
    item_ids: Sequence[str | uuid.UUID],
    process: Callable[[list[uuid.UUID], quarantine.Screen], None],
) -> None:
    """`quarantine.run_screened` the same way: the consumer's own transaction screens the batch, so a batch
    costs no transaction for the pre-check."""
    quarantine.run_screened(consumer, item_ids, process, **_isolation(consumer))


def _isolation(consumer: quarantine.Consumer) -> dict[str, Any]:
    current = settings()

    def requeue(item_id: uuid.UUID, countdown_s: float) -> None:
        current_app.send_task(consumer.task, [[str(item_id)]], countdown=countdown_s)

    return {
        "session_scope": database().session_scope,
        "requeue": requeue,
        "max_attempts": current.quarantine_max_attempts,
        "retry_base_s": current.quarantine_retry_base_s,
        "broker_errors": BROKER_ERRORS,
    }


# Commits within this window share one relay run, which starts when the window closes: a burst is
# relayed in a few large batches (few messages, few transactions) instead of one per commit.
RELAY_WINDOW_S = 0.05
_RELAY_WINDOW_KEY = "tessera:outbox-relay-window"


def _queue_relay() -> None:
    # No publish retries: the periodic relay catches up with what a down broker missed.
    with current_app.pool.acquire(block=True) as connection:
        if connection.transport.driver_type == "redis":
            # The first commit of a window opens it and queues the relay for its end; commits inside
            # it find the key and need nothing: they committed before the key expires, so before
            # the relay starts, and it publishes their events.
            window_ms = int(RELAY_WINDOW_S * 1000)
            if not connection.default_channel.client.set(_RELAY_WINDOW_KEY, 1, nx=True, px=window_ms):
                return
            current_app.send_task("events.relay", countdown=RELAY_WINDOW_S, retry=False, connection=connection)
            return
        current_app.send_task("events.relay", retry=False, connection=connection)


# Event ids per message when handing events to a direct subscriber.
HAND_OFF_BATCH = 100


def _hand_off(hand_off: dict[str, list[str]]) -> None:
    # No publish retries: the relay publishes what a down broker missed (events.HAND_OFF_GRACE).
    with current_app.pool.acquire(block=True) as connection:
        for task, event_ids in hand_off.items():
            for start in range(0, len(event_ids), HAND_OFF_BATCH):
                batch = event_ids[start : start + HAND_OFF_BATCH]
                current_app.send_task(task, [batch], retry=False, connection=connection)


class _RelayNudger:
    """Sends what a commit hands off (event ids to their direct subscriber, else a nudge to the relay)
    from a thread of its own, so a commit never waits on the broker: the committing thread only adds
    to what is pending and sets a flag (microseconds); commits made while a send is under way share
    the next one, and none waits for a window to close. With the broker down a send fails in the
    background and the periodic relay publishes the events once it is back. One thread per process,
    started on first use (a forked worker starts its own)."""

    def __init__(self) -> None:
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._emitted: list[tuple[uuid.UUID, str]] = []
        self._relay = False

    def __call__(self, emitted: list[tuple[uuid.UUID, str]], relay: bool) -> None:
        if self._pid != os.getpid():
            self._start()
        with self._lock:
            self._emitted.extend(emitted)
            self._relay = self._relay or relay
        self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._wake = threading.Event()
            self._emitted, self._relay = [], False
            threading.Thread(target=self._run, args=(self._wake,), name="outbox-relay-nudger", daemon=True).start()
            self._pid = os.getpid()

    def _run(self, wake: threading.Event) -> None:
        while True:
            wake.wait()
            wake.clear()
            with self._lock:
                emitted, relay = self._emitted, self._relay
                self._emitted, self._relay = [], False
            try:
                # The app's configuration (which registers the subscriptions) loads on its first use.
                current_app.conf.tessera_settings  # noqa: B018
                hand_off, unrouted = events.route_committed(emitted)
                relay = relay or unrouted
                if hand_off:
                    _hand_off(hand_off)
                if relay:
                    _queue_relay()
            except Exception as exc:
                _log.warning("outbox.nudge_failed", error=f"{type(exc).__name__}: {exc}")


def install_relay_nudge() -> None:
    """After a commit that wrote events, queue the relay on the process's Celery app (idempotent)."""
    events.on_events_committed(_RELAY_NUDGER)


_RELAY_NUDGER = _RelayNudger()


@worker_process_init.connect
def _fresh_connections_after_fork(**_kwargs: Any) -> None:
    # Connections inherited from the parent across fork() must not be shared: start a new pool.
    get_database.cache_clear()
