"""Celery tasks of the deployer: ids in, short sessions, the domain does the work.

`deployer.deploy` and `deployer.stop` are fed by the outbox with lists of event ids (so they run only after
the request that asked for them committed, and are redelivered if lost); `deployer.supervise` is periodic.
All are idempotent: a rollout is claimed by its history row, a stop of a process already gone is a no-op,
and supervision locks each server row while it restarts it.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from celery import shared_task

from services.deployer.domain import deployments, rollouts
from services.deployer.domain.environments import EnvironmentBuildFailed
from services.deployer.domain.process_manager import (
    ModelServerError,
    ModelServerSpec,
    ModelServerState,
    ProcessManager,
)
from shared.core import quarantine
from shared.core.artifacts import get_artifact_store
from shared.core.celery_app import Declarations, Periodic, database, run_isolated, settings
from shared.db.models import OutboxEvent

DECLARATIONS = Declarations(
    subscriptions=[
        (deployments.ROLLOUT_REQUESTED, "deployer.deploy"),
        (deployments.SERVER_RETIRED, "deployer.stop"),
        (deployments.REPLICAS_ADDED, "deployer.start_replicas"),
    ],
    # Restarts crashed model servers; a second beat skips the server rows the first one holds.
    periodic=[Periodic("deployer-supervise", "deployer.supervise", lambda s: s.deployer_supervise_interval_s)],
)


def _payloads(event_ids: list[uuid.UUID]) -> list[dict]:
    """The events' payloads, in order; an event already pruned from the outbox (published longer ago
    than its retention) is past any use and left out."""
    with database().session_scope() as session:
        rows = [session.get(OutboxEvent, event_id) for event_id in event_ids]
        return [row.payload for row in rows if row is not None]


def _consumer(task: str) -> quarantine.Consumer:
    return quarantine.Consumer(task, OutboxEvent.id, OutboxEvent.organization_id)


@shared_task(name="deployer.deploy", ignore_result=True)
def deploy(event_ids: list[str]) -> None:
    """Carry out the rollouts the events asked for, one after the other; one that breaks is retried
    alone, then quarantined, and the others go on (`shared.core.quarantine`)."""
    run_isolated(_consumer("deployer.deploy"), event_ids, _roll_outs)


def _roll_outs(event_ids: list[uuid.UUID]) -> None:
    for payload in _payloads(event_ids):
        _roll_out(uuid.UUID(payload["history_id"]))


def _roll_out(history_id: uuid.UUID) -> None:
    """Start the model servers a rollout asked for (one per replica, side by side) and swap them in; on any
    failure stop those that started and record the reason."""
    current = settings()
    # A claim outlives the slowest environment build and start-up, so only a worker that died mid-rollout
    # loses it.
    lease = timedelta(seconds=current.deployer_env_build_timeout_s + 2 * current.deployer_ready_timeout_s + 30)
    with database().session_scope() as session:
        plan = rollouts.claim_rollout(session, history_id, lease)
    if plan is None:
        return
    manager = rollouts.process_manager(current)
    spec: ModelServerSpec | None = None
    states: list[ModelServerState] = []
    failure = None
    try:
        spec = rollouts.resolve_model(plan, get_artifact_store(current), current.data_dir / "model-cache")
        _build_environment(plan, manager, spec)
        states, failure = _start_replicas(manager, spec, plan.replicas)
    except (rollouts.UnloadableModel, EnvironmentBuildFailed) as exc:
        failure = exc.message
    except Exception as exc:  # the history must say why, whatever broke; the worker log has the trace
        failure = f"{type(exc).__name__}: {exc}"
    try:
        with database().session_scope() as session:
            retired = rollouts.finish_rollout(session, plan, spec, states, failure)
    except BaseException:
        # Not recorded, so not serving: do not leave orphan processes behind.
        for state in states:
            manager.stop(state)
        raise
    for old in retired:
        manager.stop(old)


def _build_environment(plan: rollouts.RolloutPlan, manager: ProcessManager, spec: ModelServerSpec) -> None:
    """Build the model's own environment, if it needs one not built yet, with the stage on show meanwhile."""
    planned = rollouts.environment_to_build(manager, spec)
    if planned is None or manager.environments is None:
        return
    with database().session_scope() as session:
        rollouts.record_stage(
            session,
            plan,
            "building_environment",
            f"building the environment of version {plan.version_label} (installing {planned.summary()})",
        )
    manager.environments.build(planned)
    with database().session_scope() as session:
        rollouts.record_stage(session, plan, "starting", f"starting a model server for version {plan.version_label}")


def _start_replicas(
    manager: ProcessManager, spec: ModelServerSpec, replicas: int
) -> tuple[list[ModelServerState], str | None]:
    """All replicas or none: (states, None), or ([], the first failure) with the started ones stopped."""
    with ThreadPoolExecutor(max_workers=replicas) as pool:
        attempts = list(pool.map(lambda _: _try_start(manager, spec), range(replicas)))
    started = [attempt for attempt in attempts if isinstance(attempt, ModelServerState)]
    failures = [attempt for attempt in attempts if isinstance(attempt, str)]
    if not failures:
        return started, None
    for state in started:
        manager.stop(state)
    return [], failures[0]


def _try_start(manager: ProcessManager, spec: ModelServerSpec) -> ModelServerState | str:
    try:
        return manager.start(spec)
    except ModelServerError as exc:
        return exc.message


@shared_task(name="deployer.stop", ignore_result=True)
def stop(event_ids: list[str]) -> None:
    run_isolated(_consumer("deployer.stop"), event_ids, _stop_retired)


def _stop_retired(event_ids: list[uuid.UUID]) -> None:
    manager = rollouts.process_manager(settings())
    for payload in _payloads(event_ids):
        rollouts.stop_retired(manager, payload["pid"], payload["port"])


@shared_task(name="deployer.supervise", ignore_result=True)
def supervise() -> None:
    """Restart crashed model servers, one row (and one short transaction) at a time."""
    _supervise(rollouts.process_manager(settings()), None)


@shared_task(name="deployer.start_replicas", ignore_result=True)
def start_replicas(event_ids: list[str]) -> None:
    """Start the replicas a scale-up added, without waiting for the next supervision beat."""
    run_isolated(_consumer("deployer.start_replicas"), event_ids, _start_added)


def _start_added(event_ids: list[uuid.UUID]) -> None:
    manager = rollouts.process_manager(settings())
    for payload in _payloads(event_ids):
        _supervise(manager, uuid.UUID(payload["deployment_id"]))


def _supervise(manager: ProcessManager, deployment_id: uuid.UUID | None) -> None:
    with database().session_scope() as session:
        server_ids = rollouts.supervised_server_ids(session, deployment_id)
    for server_id in server_ids:
        with database().session_scope() as session:
            rollouts.supervise_server(session, server_id, manager)
