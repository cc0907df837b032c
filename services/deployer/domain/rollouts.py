"""Carrying out rollouts on this machine, and keeping the model servers alive.

A rollout is three steps so that no transaction stays open while a model server starts (seconds to a
minute): `claim_rollout` (short transaction), `resolve_model` + `ProcessManager.start` (no transaction),
`finish_rollout` (short transaction that swaps the new server in). The server of the previous version keeps
serving until that swap, and keeps serving if the rollout fails.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.deployer.domain.deployments import (
    SERVING_STATES,
    announce,
    env_manager,
    record,
    replica_count,
    servers_for_role,
)
from services.deployer.domain.environments import EnvManager, ModelEnvironments, PlannedEnvironment
from services.deployer.domain.process_manager import (
    ModelServerSpec,
    ModelServerState,
    ProcessManager,
    SupervisionOutcome,
)
from shared.core.artifact_locations import uri_key
from shared.core.artifacts import ArtifactStore
from shared.core.errors import TesseraError
from shared.core.settings import Settings
from shared.db.base import utcnow
from shared.db.models import Deployment, DeploymentHistory, DeploymentServer, Model, ModelVersion, Project

_EVENT_FOR_ROLE = {"canary": "deployment.canary_started", "shadow": "deployment.shadow_started"}


class UnloadableModel(TesseraError):
    """The version has nothing a model server could load; `message` is the reason for the history."""


@dataclass(frozen=True)
class RolloutPlan:
    deployment_id: uuid.UUID
    history_id: uuid.UUID
    action: str
    role: str
    percent: int
    version_id: uuid.UUID
    artifact_uri: str | None
    model_name: str
    version_label: str
    project: Project
    # Model-server processes to start, one per replica.
    replicas: int
    env_manager: EnvManager


def process_manager(settings: Settings) -> ProcessManager:
    return ProcessManager(
        settings.data_dir / "model-servers",
        ready_timeout_s=settings.deployer_ready_timeout_s,
        environments=ModelEnvironments(
            settings.data_dir / "model-envs", build_timeout_s=settings.deployer_env_build_timeout_s
        ),
    )


def environment_to_build(manager: ProcessManager, spec: ModelServerSpec) -> PlannedEnvironment | None:
    """The environment the model needs when it is not built yet; None when there is nothing to build."""
    if manager.environments is None:
        return None
    planned = manager.environments.plan(Path(spec.model_uri), spec.env_manager)
    return None if planned is None or planned.is_ready else planned


def record_stage(session: Session, plan: RolloutPlan, stage: str, reason: str) -> None:
    """Show how far a rollout has come (`building_environment`, then `starting`) in its history entry and
    the deployment's status; a first deploy or a new stable version shows `building_environment` as status."""
    entry = session.get(DeploymentHistory, plan.history_id)
    if entry is None or entry.outcome != "pending":
        return
    entry.details = {**entry.details, "stage": stage}
    deployment = session.get_one(Deployment, plan.deployment_id)
    if plan.role == "stable" and deployment.status in ("deploying", "building_environment"):
        deployment.status = "building_environment" if stage == "building_environment" else "deploying"
    deployment.status_reason = f"{plan.action}: {reason}"
    session.flush()


def claim_rollout(session: Session, history_id: uuid.UUID, lease: timedelta) -> RolloutPlan | None:
    """The pending rollout to carry out, or None when it is done or another worker holds it (redelivery).

    A claim older than `lease` is taken over: its worker died while starting the server.
    """
    entry = session.scalar(
        select(DeploymentHistory).where(DeploymentHistory.id == history_id).with_for_update(skip_locked=True)
    )
    if entry is None or entry.outcome != "pending":
        return None
    claimed_at = entry.details.get("claimed_at")
    now = utcnow()
    if claimed_at is not None and now - datetime.fromisoformat(claimed_at) < lease:
        return None
    entry.details = {**entry.details, "claimed_at": now.isoformat()}
    row = session.execute(
        select(ModelVersion, Model.name, Project, Deployment)
        .join(Model, Model.id == ModelVersion.model_id)
        .join(Project, Project.id == Model.project_id)
        .join(Deployment, Deployment.id == entry.deployment_id)
        .where(ModelVersion.id == entry.to_version_id)
    ).one()
    version, model_name, project, deployment = row
    return RolloutPlan(
        deployment_id=entry.deployment_id,
        history_id=entry.id,
        action=entry.action,
        role=entry.details["role"],
        percent=entry.details.get("percent", 100),
        version_id=version.id,
        artifact_uri=version.artifact_uri,
        model_name=model_name,
        version_label=str(version.version),
        project=project,
        replicas=replica_count(deployment, entry.details["role"]),
        env_manager=env_manager(deployment.config),
    )


def resolve_model(plan: RolloutPlan, store: ArtifactStore, cache_dir: Path) -> ModelServerSpec:
    """A local MLflow model directory for the version: in place on a local store, downloaded once from S3."""
    uri = plan.artifact_uri
    if not uri:
        raise UnloadableModel(f"version {plan.version_label} of '{plan.model_name}' has no artifact")
    key = uri_key(plan.project, uri)
    if key is None:
        path = Path(uri.removeprefix("file://"))
    elif store.is_local:
        path = Path(store.root) / key
    else:
        path = cache_dir / plan.version_id.hex
        if not (path / "MLmodel").is_file():
            cache_dir.mkdir(parents=True, exist_ok=True)
            partial = cache_dir / f"{plan.version_id.hex}.partial"
            store.fs.get(f"{store.root}/{key}/", str(partial), recursive=True)
            # A rename, so a download cut short is never mistaken for a model.
            partial.rename(path)
    if not (path / "MLmodel").is_file():
        raise UnloadableModel(
            f"version {plan.version_label} of '{plan.model_name}' has no loadable MLflow model at {uri} "
            "(no MLmodel file)"
        )
    return ModelServerSpec(
        model_uri=str(path), name=plan.model_name, version=plan.version_label, env_manager=plan.env_manager
    )


def finish_rollout(
    session: Session,
    plan: RolloutPlan,
    spec: ModelServerSpec | None,
    states: list[ModelServerState],
    failure: str | None,
) -> list[ModelServerState]:
    """Swap the new servers in, one per replica (or record why there are none); returns the servers the
    caller must stop."""
    deployment = session.scalars(select(Deployment).where(Deployment.id == plan.deployment_id).with_for_update()).one()
    entry = session.get_one(DeploymentHistory, plan.history_id)
    entry.details = {**entry.details, "finished_at": utcnow().isoformat()}
    if not states or spec is None:
        entry.outcome, entry.reason = "failed", failure
        if plan.role == "stable":
            still_serving = entry.details.get("status_before") in SERVING_STATES and servers_for_role(
                session, deployment.id, "stable"
            )
            deployment.status = entry.details["status_before"] if still_serving else "failed"
        deployment.status_reason = f"{plan.action} of version {plan.version_label} failed: {failure}"
        announce(
            session,
            plan.project,
            deployment,
            "deployment.failed",
            action=plan.action,
            role=plan.role,
            to_version_id=plan.version_id,
            reason=failure,
        )
        return []
    if deployment.status == "stopped":
        entry.outcome, entry.reason = "cancelled", "the deployment was stopped while the server started"
        return states
    previous = servers_for_role(session, deployment.id, plan.role)
    retired = [_state_of(server) for server in previous if server.pid is not None]
    for server in previous[len(states) :]:
        session.delete(server)
    for replica, state in enumerate(states):
        if replica < len(previous):
            server = previous[replica]
        else:
            server = DeploymentServer(deployment_id=deployment.id, role=plan.role, replica=replica, restarts=0)
            session.add(server)
        server.model_version_id, server.model_uri = plan.version_id, spec.model_uri
        _apply_state(server, state)
    if plan.role == "stable":
        deployment.model_version_id = plan.version_id
        deployment.status = "rolled_back" if plan.action == "rollback" else "healthy"
    elif plan.role == "canary":
        deployment.canary_version_id, deployment.canary_percent = plan.version_id, plan.percent
    else:
        deployment.shadow_version_id, deployment.shadow_percent = plan.version_id, plan.percent
    deployment.status_reason = None
    deployment.endpoint_url = f"/deployments/{deployment.id}/invocations"
    entry.outcome = "succeeded"
    entry.details = {
        **entry.details,
        "port": states[0].port,
        "pid": states[0].pid,
        "replicas": [{"port": state.port, "pid": state.pid} for state in states],
    }
    event = _EVENT_FOR_ROLE.get(plan.role) or (
        "deployment.rolled_back" if plan.action == "rollback" else "deployment.healthy"
    )
    announce(
        session,
        plan.project,
        deployment,
        event,
        action=plan.action,
        role=plan.role,
        from_version_id=entry.from_version_id,
        to_version_id=plan.version_id,
    )
    session.flush()
    return retired


def supervised_server_ids(session: Session, deployment_id: uuid.UUID | None = None) -> list[uuid.UUID]:
    """Every model server to keep running (or only one deployment's)."""
    query = (
        select(DeploymentServer.id)
        .join(Deployment, Deployment.id == DeploymentServer.deployment_id)
        .where(Deployment.status != "stopped", Deployment.deleted_at.is_(None))
    )
    if deployment_id is not None:
        query = query.where(Deployment.id == deployment_id)
    return list(session.scalars(query))


def supervise_server(session: Session, server_id: uuid.UUID, manager: ProcessManager) -> SupervisionOutcome | None:
    """Restart the server if its process died, or start a replica added since (state `starting`). The row
    stays locked while it starts, and a second beat skips locked rows, so two supervisors never start the
    same server twice."""
    row = session.execute(
        select(DeploymentServer, ModelVersion.version, Model.name, Deployment.config)
        .join(ModelVersion, ModelVersion.id == DeploymentServer.model_version_id)
        .join(Model, Model.id == ModelVersion.model_id)
        .join(Deployment, Deployment.id == DeploymentServer.deployment_id)
        .where(DeploymentServer.id == server_id)
        .with_for_update(of=DeploymentServer, skip_locked=True)
    ).first()
    if row is None:
        return None
    server, version_number, model_name, config = row
    spec = ModelServerSpec(
        model_uri=server.model_uri, name=model_name, version=str(version_number), env_manager=env_manager(config)
    )
    outcome = manager.ensure_running(spec, _state_of(server) if server.pid is not None else None)
    if outcome.action == "running":
        return outcome
    deployment = session.get_one(Deployment, server.deployment_id)
    if outcome.action == "restarted":
        added = server.state == "starting"
        assert outcome.state is not None  # a restart reports the new process
        _apply_state(server, outcome.state)
        server.restarts += 0 if added else 1
        record(
            session,
            deployment,
            "start_replica" if added else "restart",
            "succeeded",
            from_version_id=server.model_version_id,
            to_version_id=server.model_version_id,
            reason=f"replica {server.replica} added" if added else outcome.reason,
            details={"role": server.role, "replica": server.replica, "pid": server.pid, "port": server.port},
        )
    elif server.state != "failed":
        # Recorded once per failure, not on every beat that retries it.
        server.state, server.last_error = "failed", outcome.reason
        record(
            session,
            deployment,
            "restart",
            "failed",
            from_version_id=server.model_version_id,
            reason=outcome.reason,
            details={"role": server.role, "replica": server.replica},
        )
        announce(
            session,
            session.get_one(Project, deployment.project_id),
            deployment,
            "deployment.failed",
            action="restart",
            role=server.role,
            reason=outcome.reason,
        )
    session.flush()
    return outcome


def stop_recorded_servers(session: Session, manager: ProcessManager) -> int:
    """Stop every model-server process the database records, when the platform itself stops; returns how
    many were running. The rows stay: supervision starts the servers again when the platform is back."""
    recorded = session.execute(
        select(DeploymentServer.pid, DeploymentServer.port).where(DeploymentServer.pid.is_not(None))
    ).all()
    # The manager checks pid *and* port against /proc, so a pid reused since cannot be hit.
    states = [
        ModelServerState(pid=pid, port=port, started_at=utcnow(), log_path="") for pid, port in recorded if pid and port
    ]
    running = [state for state in states if manager.is_running(state)]
    for state in running:
        manager.stop(state)
    return len(running)


def stop_retired(manager: ProcessManager, pid: int, port: int) -> None:
    # The manager checks pid *and* port against /proc, so a pid reused since cannot be hit.
    manager.stop(ModelServerState(pid=pid, port=port, started_at=utcnow(), log_path=""))


def _state_of(server: DeploymentServer) -> ModelServerState:
    assert server.pid is not None and server.port is not None  # called for a server with a process
    return ModelServerState(
        pid=server.pid,
        port=server.port,
        started_at=server.started_at or utcnow(),
        log_path=server.log_path or "",
        host=server.host,
    )


def _apply_state(server: DeploymentServer, state: ModelServerState) -> None:
    server.pid, server.port, server.host = state.pid, state.port, state.host
    server.log_path, server.started_at = state.log_path, state.started_at
    server.state, server.last_error = "running", None
