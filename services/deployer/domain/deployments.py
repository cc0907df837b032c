"""Deployments: what should serve, every change recorded in `deployment_history` and announced via the outbox.

Changes that need a new model-server process (a first deploy, a canary, a shadow, a rollback to an older
version) are *requested* here: a history row with outcome `pending` plus a `deployment.rollout_requested`
event, which the outbox relays to the `deployer.deploy` task after commit (see rollouts.py). Changes that
only move traffic between running servers (promote, dropping a canary or shadow, stop) happen right here;
the processes they retire are stopped by the `deployer.stop` task from a `deployment.server_retired` event.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.deployer.domain import kserve
from services.deployer.domain.canary import CanaryThresholds
from services.deployer.domain.environments import EnvManager
from shared.core import audit, events, served_predictions
from shared.core.auth import Access
from shared.core.errors import AlreadyExists, Conflict, InvalidParameter, InvalidState, NotFound
from shared.core.model_refs import VersionRef, resolve_version
from shared.core.pagination import RowPage, paginate
from shared.db.models import Deployment, DeploymentHistory, DeploymentServer, Model, ModelVersion, Project
from shared.db.session import affected_rows

READ, WRITE = "deployments:read", "deployments:write"
# Linking a monitor changes what it watches: the caller must be able to change monitors too.
MONITOR_WRITE = "monitoring:write"
# States in which the stable version answers requests.
SERVING_STATES = ("healthy", "rolled_back")
# Actions after which the stable version is one that served healthily: what a rollback may return to.
_STABLE_ACTIONS = ("deploy", "promote", "rollback")
ROLLOUT_REQUESTED = "deployment.rollout_requested"
SERVER_RETIRED = "deployment.server_retired"
# Replicas were added: the worker starts their processes at once rather than at its next supervision beat.
REPLICAS_ADDED = "deployment.replicas_added"
# Roles whose servers run `deployment.replicas` processes; a shadow only mirrors, so one process serves it.
REPLICATED_ROLES = ("stable", "canary")


def replica_count(deployment: Deployment, role: str) -> int:
    return deployment.replicas if role in REPLICATED_ROLES else 1


def batching(deployment: Deployment) -> dict[str, Any] | None:
    """The deployment's request batching ({"max_batch_size", "max_latency_ms"}), or None when it is off."""
    return deployment.config.get("batching")


def canary_thresholds(deployment: Deployment) -> CanaryThresholds:
    settings = deployment.config.get("canary", {})
    names = ("max_error_rate", "max_p95_latency_ms", "max_p95_latency_ratio", "min_requests")
    return CanaryThresholds(**{key: settings[key] for key in names if key in settings})


def env_manager(config: dict[str, Any]) -> EnvManager:
    """The deployment's Python environment manager (deployments made before it existed: automatic)."""
    return config.get("env_manager", "auto")


def canary_window(deployment: Deployment) -> tuple[float | None, int | None]:
    """(seconds, requests) of the sliding window the canary is judged over."""
    settings = deployment.config.get("canary", {})
    return settings.get("window_seconds", 60.0), settings.get("max_requests", 500)


# --- reads ----------------------------------------------------------------------------------------


def get_deployment(session: Session, access: Access, deployment_id: uuid.UUID, scope: str = READ) -> Deployment:
    deployment = session.get(Deployment, deployment_id)
    if deployment is None or deployment.deleted_at is not None:
        raise NotFound(f"Deployment '{deployment_id}' does not exist")
    try:
        access.require_project(deployment.project_id, scope)
    except NotFound:
        raise NotFound(f"Deployment '{deployment_id}' does not exist") from None
    return deployment


def list_deployments(
    session: Session, access: Access, *, project_id: uuid.UUID | None, page_token: str | None, max_results: int
) -> RowPage:
    query = select(Deployment).where(
        Deployment.deleted_at.is_(None), Deployment.project_id.in_(access.readable_project_ids(READ))
    )
    if project_id is not None:
        query = query.where(Deployment.project_id == project_id)
    return paginate(
        session,
        query,
        created_col=Deployment.created_at,
        id_col=Deployment.id,
        page_token=page_token,
        max_results=max_results,
        newest_first=True,
    )


def list_history(
    session: Session, access: Access, deployment_id: uuid.UUID, *, page_token: str | None, max_results: int
) -> RowPage:
    get_deployment(session, access, deployment_id)
    return paginate(
        session,
        select(DeploymentHistory).where(DeploymentHistory.deployment_id == deployment_id),
        created_col=DeploymentHistory.created_at,
        id_col=DeploymentHistory.id,
        page_token=page_token,
        max_results=max_results,
        newest_first=True,
    )


def servers_by_deployment(
    session: Session, deployment_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[DeploymentServer]]:
    """The model servers of many deployments in one query (a list page must not query per row)."""
    servers: dict[uuid.UUID, list[DeploymentServer]] = {deployment_id: [] for deployment_id in deployment_ids}
    rows = session.scalars(
        select(DeploymentServer)
        .where(DeploymentServer.deployment_id.in_(deployment_ids))
        .order_by(DeploymentServer.role, DeploymentServer.replica)
    )
    for server in rows:
        servers[server.deployment_id].append(server)
    return servers


# --- changes --------------------------------------------------------------------------------------


def create_deployment(
    session: Session,
    access: Access,
    *,
    project_id: uuid.UUID,
    name: str,
    ref: VersionRef,
    target: str,
    canary: dict[str, Any],
    config: dict[str, Any],
    replicas: int = 1,
) -> Deployment:
    project = access.require_project(project_id, WRITE)
    version = resolve_version(session, project.id, ref)
    taken = session.scalar(select(Deployment.id).where(Deployment.project_id == project.id, Deployment.name == name))
    if taken is not None:
        raise AlreadyExists(f"Deployment '{name}' already exists in this project")
    deployment = Deployment(
        id=uuid.uuid4(),
        project_id=project.id,
        name=name,
        target=target,
        status="pending",
        model_version_id=version.id,
        canary_percent=0,
        shadow_percent=0,
        replicas=replicas,
        config={**config, "canary": canary},
        created_by=access.principal.user_id,
    )
    session.add(deployment)
    session.flush()
    if target == "kserve":
        # Validated now, so a deployment that could never be applied is refused at once.
        render_manifest(session, deployment)
        deployment.status_reason = "manifest ready: download it from /manifest and apply it with kubectl"
        record(session, deployment, "deploy", "rendered", to_version_id=version.id, actor_id=access.principal.user_id)
    else:
        request_rollout(session, project, deployment, version, role="stable", action="deploy", access=access)
    _describe(session, project, deployment, "deployment.create")
    return deployment


def set_monitor(session: Session, access: Access, deployment_id: uuid.UUID, monitor_id: uuid.UUID | None) -> Deployment:
    """Link the monitor that receives the deployment's served predictions (None: unlink)."""
    deployment = get_deployment(session, access, deployment_id, WRITE)
    project = access.require_project(deployment.project_id, MONITOR_WRITE)
    served_predictions.link_monitor(session, deployment, monitor_id)
    session.flush()
    _describe(session, project, deployment, "deployment.link_monitor", {"monitor_id": monitor_id and str(monitor_id)})
    return deployment


def update_serving(
    session: Session,
    access: Access,
    deployment_id: uuid.UUID,
    *,
    replicas: int | None = None,
    batching_settings: dict[str, Any] | None = None,
    clear_batching: bool = False,
) -> Deployment:
    """Scale the deployment to `replicas` model-server processes per role, and turn request batching on
    (`batching_settings`) or off (`clear_batching`). Batching applies to the next requests (the gateway
    hands it to the model servers with each request); new replicas get a row in state `starting` and the
    worker starts them, while surplus replicas leave the routing table at once and are stopped."""
    deployment, project = _for_change(session, access, deployment_id, local_only=False)
    details: dict[str, Any] = {}
    if batching_settings is not None or clear_batching:
        config = {key: value for key, value in deployment.config.items() if key != "batching"}
        deployment.config = {**config, "batching": batching_settings} if batching_settings else config
        details["batching"] = batching_settings
    if replicas is not None and replicas != deployment.replicas:
        details["replicas"] = {"from": deployment.replicas, "to": replicas}
        deployment.replicas = replicas
        if deployment.target == "local" and _scale_servers(session, project, deployment):
            events.emit(
                session,
                REPLICAS_ADDED,
                {"deployment_id": str(deployment.id)},
                organization_id=project.organization_id,
                project_id=project.id,
            )
    if not details:
        return deployment
    record(
        session,
        deployment,
        "scale" if "replicas" in details else "configure",
        "succeeded",
        from_version_id=deployment.model_version_id,
        to_version_id=deployment.model_version_id,
        details=details,
        actor_id=access.principal.user_id,
    )
    session.flush()
    _describe(session, project, deployment, "deployment.update", {key: str(value) for key, value in details.items()})
    return deployment


def _scale_servers(session: Session, project: Project, deployment: Deployment) -> bool:
    """Add the missing replicas' rows (the worker starts them) and retire the surplus; True if any was added."""
    added = False
    for role in REPLICATED_ROLES:
        servers = servers_for_role(session, deployment.id, role)
        if not servers:
            continue
        for server in servers[deployment.replicas :]:
            _retire(session, project, deployment, server)
        template = servers[0]
        for replica in range(len(servers), deployment.replicas):
            session.add(
                DeploymentServer(
                    deployment_id=deployment.id,
                    role=role,
                    replica=replica,
                    model_version_id=template.model_version_id,
                    model_uri=template.model_uri,
                    state="starting",
                    restarts=0,
                )
            )
            added = True
    session.flush()
    return added


def linked_monitors(session: Session, deployment_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """The monitor linked to each of these deployments that has one, in one query."""
    return served_predictions.linked_monitor_ids(session, deployment_ids)


def start_canary(
    session: Session,
    access: Access,
    deployment_id: uuid.UUID,
    ref: VersionRef,
    percent: int,
    plan: dict[str, Any] | None = None,
) -> Deployment:
    """`plan`: a progressive rollout ({"steps": [percent, ...], "step_seconds"}) the gateway carries out,
    starting at its first step; none: the canary stays at `percent` until promoted or rolled back."""
    deployment, project = _for_change(session, access, deployment_id, local_only=True)
    if deployment.status not in SERVING_STATES:
        raise InvalidState(f"A canary needs a serving deployment; this one is '{deployment.status}'")
    version = resolve_version(session, project.id, ref)
    if version.id == deployment.model_version_id:
        raise InvalidParameter("The canary version is already the stable version")
    config = {key: value for key, value in deployment.config.items() if key != "plan"}
    deployment.config = {**config, "plan": {**plan, "step": 0}} if plan else config
    request_rollout(
        session, project, deployment, version, role="canary", action="canary", access=access, percent=percent
    )
    return deployment


def set_shadow(
    session: Session, access: Access, deployment_id: uuid.UUID, ref: VersionRef | None, percent: int
) -> Deployment:
    deployment, project = _for_change(session, access, deployment_id, local_only=True)
    if ref is None:
        if deployment.shadow_version_id is None:
            return deployment
        retired = deployment.shadow_version_id
        retire_server(session, project, deployment, "shadow")
        deployment.shadow_version_id, deployment.shadow_percent = None, 0
        record(session, deployment, "unshadow", "succeeded", from_version_id=retired, actor_id=access.principal.user_id)
        return deployment
    if deployment.status not in SERVING_STATES:
        raise InvalidState(f"A shadow needs a serving deployment; this one is '{deployment.status}'")
    version = resolve_version(session, project.id, ref)
    request_rollout(
        session, project, deployment, version, role="shadow", action="shadow", access=access, percent=percent
    )
    return deployment


def promote(session: Session, access: Access, deployment_id: uuid.UUID) -> Deployment:
    """The canary becomes the stable version at 100 %: its running server simply changes role."""
    deployment, project = _for_change(session, access, deployment_id, local_only=True)
    if deployment.canary_version_id is None:
        raise InvalidState("There is no canary to promote")
    _promote(session, project, deployment, actor_id=access.principal.user_id)
    return deployment


def _promote(
    session: Session,
    project: Project,
    deployment: Deployment,
    *,
    actor_id: uuid.UUID | None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    previous = deployment.model_version_id
    retire_server(session, project, deployment, "stable")
    for canary_server in servers_for_role(session, deployment.id, "canary"):
        canary_server.role = "stable"
    canary_version_id = deployment.canary_version_id
    assert canary_version_id is not None  # promoted only while a canary runs
    deployment.model_version_id, deployment.canary_version_id, deployment.canary_percent = canary_version_id, None, 0
    deployment.status, deployment.status_reason = "healthy", None
    record(
        session,
        deployment,
        "promote",
        "succeeded",
        from_version_id=previous,
        to_version_id=deployment.model_version_id,
        reason=reason,
        details=details,
        actor_id=actor_id,
    )
    announce(session, project, deployment, "deployment.promoted", from_version_id=previous)


def advance_canary(
    session: Session,
    deployment_id: uuid.UUID,
    canary_version_id: uuid.UUID,
    from_percent: int,
    details: dict[str, Any],
) -> str | None:
    """The gateway's verdict that a plan's step passed: on to the next step, or promotion after the last.
    Claimed by a conditional update (the canary and its share as the verdict saw them), so when several
    gateway processes reach it, one carries it out; returns "step", "promoted" or None (not this one's)."""
    claimed = session.execute(
        update(Deployment)
        .where(
            Deployment.id == deployment_id,
            Deployment.canary_version_id == canary_version_id,
            Deployment.canary_percent == from_percent,
        )
        .values(canary_percent=from_percent)
        .execution_options(synchronize_session=False)
    )
    if affected_rows(claimed) != 1:
        return None
    deployment = session.scalars(
        select(Deployment)
        .where(Deployment.id == deployment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    plan = deployment.config.get("plan")
    if not plan:
        return None
    project = session.get_one(Project, deployment.project_id)
    step = plan["step"]
    figures = {**details, "step": step + 1, "steps": plan["steps"], "percent": from_percent}
    if step + 1 >= len(plan["steps"]):
        deployment.config = {key: value for key, value in deployment.config.items() if key != "plan"}
        _promote(
            session,
            project,
            deployment,
            actor_id=None,
            reason=f"automatic: all {len(plan['steps'])} steps of the rollout plan passed",
            details=figures,
        )
        return "promoted"
    to_percent = plan["steps"][step + 1]
    deployment.canary_percent = to_percent
    deployment.config = {**deployment.config, "plan": {**plan, "step": step + 1, "step_started_at": time.time()}}
    record(
        session,
        deployment,
        "canary_step",
        "succeeded",
        from_version_id=deployment.model_version_id,
        to_version_id=canary_version_id,
        reason=f"automatic: step {step + 1} of {len(plan['steps'])} passed at {from_percent} %; now {to_percent} %",
        details=figures,
    )
    announce(session, project, deployment, "deployment.canary_step", percent=to_percent, step=step + 2)
    return "step"


def rollback(session: Session, access: Access, deployment_id: uuid.UUID, reason: str | None = None) -> Deployment:
    """One call back to safety: drop the canary if there is one, else return to the previous healthy version."""
    deployment, project = _for_change(session, access, deployment_id, local_only=True)
    actor_id = access.principal.user_id
    if deployment.canary_version_id is not None:
        _drop_canary(session, project, deployment, action="rollback", reason=reason, actor_id=actor_id)
        return deployment
    previous = previous_healthy_version(session, deployment)
    if previous is None:
        raise InvalidState("No earlier healthy version in this deployment's history to roll back to")
    version = resolve_version(session, project.id, VersionRef(version_id=previous))
    request_rollout(
        session, project, deployment, version, role="stable", action="rollback", access=access, reason=reason
    )
    return deployment


def auto_rollback(
    session: Session, deployment_id: uuid.UUID, canary_version_id: uuid.UUID, reason: str, details: dict[str, Any]
) -> bool:
    """The gateway's verdict on a failing canary. Several gateway processes reach it from the same shared
    counts at about the same time: a conditional update lets exactly one of them carry it out, and the
    others get False (as does a verdict on a canary an operator already removed)."""
    claimed = session.execute(
        update(Deployment)
        .where(Deployment.id == deployment_id, Deployment.canary_version_id == canary_version_id)
        .values(canary_percent=0)
        .execution_options(synchronize_session=False)
    )
    if affected_rows(claimed) != 1:
        return False
    deployment = session.scalars(
        select(Deployment).where(Deployment.id == deployment_id).execution_options(populate_existing=True)
    ).one()
    project = session.get_one(Project, deployment.project_id)
    _drop_canary(session, project, deployment, action="auto_rollback", reason=reason, actor_id=None, details=details)
    return True


def stop(session: Session, access: Access, deployment_id: uuid.UUID) -> Deployment:
    deployment, project = _for_change(session, access, deployment_id, local_only=False)
    if deployment.status == "stopped":
        return deployment
    for role in ("stable", "canary", "shadow"):
        retire_server(session, project, deployment, role)
    deployment.canary_version_id, deployment.canary_percent = None, 0
    deployment.shadow_version_id, deployment.shadow_percent = None, 0
    deployment.status, deployment.status_reason = "stopped", None
    record(
        session,
        deployment,
        "stop",
        "succeeded",
        from_version_id=deployment.model_version_id,
        actor_id=access.principal.user_id,
    )
    announce(session, project, deployment, "deployment.stopped")
    return deployment


def render_manifest(session: Session, deployment: Deployment) -> dict[str, Any]:
    """The KServe InferenceService for the stable version (and the canary's share, if any); validated."""
    version = session.get_one(ModelVersion, deployment.canary_version_id or deployment.model_version_id)
    model = session.get_one(Model, version.model_id)
    if not version.artifact_uri:
        raise InvalidState(f"Version {version.version} of '{model.name}' has no artifact to serve")
    options = deployment.config.get("kserve", {})
    manifest = kserve.render_inference_service(
        name=kserve.dns1035_name(deployment.name),
        storage_uri=version.artifact_uri,
        model_name=model.name,
        model_version=str(version.version),
        namespace=options.get("namespace"),
        requests=options.get("requests"),
        limits=options.get("limits"),
        # The deployment's replica count, unless the KServe options set an autoscaling range of their own.
        min_replicas=options.get("min_replicas", deployment.replicas),
        max_replicas=options.get("max_replicas", max(deployment.replicas, options.get("min_replicas", 0))),
        canary_traffic_percent=deployment.canary_percent if deployment.canary_version_id else None,
        service_account_name=options.get("service_account_name"),
        runtime=options.get("runtime"),
    )
    kserve.validate_inference_service(manifest)
    return manifest


def previous_healthy_version(session: Session, deployment: Deployment) -> uuid.UUID | None:
    """The newest version that served as stable, other than the current one."""
    return session.scalar(
        select(DeploymentHistory.to_version_id)
        .where(
            DeploymentHistory.deployment_id == deployment.id,
            DeploymentHistory.action.in_(_STABLE_ACTIONS),
            DeploymentHistory.outcome == "succeeded",
            DeploymentHistory.to_version_id != deployment.model_version_id,
        )
        .order_by(DeploymentHistory.created_at.desc())
        .limit(1)
    )


# --- shared by the rollout and supervision steps --------------------------------------------------


def record(
    session: Session,
    deployment: Deployment,
    action: str,
    outcome: str,
    *,
    from_version_id: uuid.UUID | None = None,
    to_version_id: uuid.UUID | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    actor_id: uuid.UUID | None = None,
) -> DeploymentHistory:
    row = DeploymentHistory(
        deployment_id=deployment.id,
        action=action,
        outcome=outcome,
        from_version_id=from_version_id,
        to_version_id=to_version_id,
        reason=reason,
        details=details or {},
        actor_id=actor_id,
    )
    session.add(row)
    session.flush()
    return row


def announce(session: Session, project: Project, deployment: Deployment, event_type: str, **payload: Any) -> None:
    events.emit(
        session,
        event_type,
        {
            "deployment_id": str(deployment.id),
            "name": deployment.name,
            "status": deployment.status,
            "model_version_id": str(deployment.model_version_id),
            **{key: str(value) if isinstance(value, uuid.UUID) else value for key, value in payload.items()},
        },
        organization_id=project.organization_id,
        project_id=project.id,
    )


def retire_server(session: Session, project: Project, deployment: Deployment, role: str) -> None:
    """Remove the role's server rows at once (the gateway stops routing to them) and have their processes
    stopped."""
    for server in servers_for_role(session, deployment.id, role):
        _retire(session, project, deployment, server)


def _retire(session: Session, project: Project, deployment: Deployment, server: DeploymentServer) -> None:
    if server.pid is not None and server.port is not None:
        events.emit(
            session,
            SERVER_RETIRED,
            {"deployment_id": str(deployment.id), "role": server.role, "pid": server.pid, "port": server.port},
            organization_id=project.organization_id,
            project_id=project.id,
        )
    session.delete(server)
    session.flush()


def servers_for_role(session: Session, deployment_id: uuid.UUID, role: str) -> list[DeploymentServer]:
    """The role's replicas, in replica order."""
    return list(
        session.scalars(
            select(DeploymentServer)
            .where(DeploymentServer.deployment_id == deployment_id, DeploymentServer.role == role)
            .order_by(DeploymentServer.replica)
        )
    )


def _drop_canary(
    session: Session,
    project: Project,
    deployment: Deployment,
    *,
    action: str,
    reason: str | None,
    actor_id: uuid.UUID | None,
    details: dict[str, Any] | None = None,
) -> None:
    canary = deployment.canary_version_id
    retire_server(session, project, deployment, "canary")
    deployment.canary_version_id, deployment.canary_percent = None, 0
    deployment.config = {key: value for key, value in deployment.config.items() if key != "plan"}
    deployment.status, deployment.status_reason = "rolled_back", reason
    record(
        session,
        deployment,
        action,
        "succeeded",
        from_version_id=canary,
        to_version_id=deployment.model_version_id,
        reason=reason,
        details=details,
        actor_id=actor_id,
    )
    announce(session, project, deployment, "deployment.rolled_back", from_version_id=canary, reason=reason)


def request_rollout(
    session: Session,
    project: Project,
    deployment: Deployment,
    version: ModelVersion,
    *,
    role: str,
    action: str,
    access: Access,
    percent: int = 100,
    reason: str | None = None,
) -> DeploymentHistory:
    current = {
        "stable": deployment.model_version_id,
        "canary": deployment.canary_version_id,
        "shadow": deployment.shadow_version_id,
    }[role]
    entry = record(
        session,
        deployment,
        action,
        "pending",
        # A first deploy comes from nothing (the row already names the version it asks for).
        from_version_id=None if current == version.id else current,
        to_version_id=version.id,
        reason=reason,
        details={"role": role, "percent": percent, "status_before": deployment.status},
        actor_id=access.principal.user_id,
    )
    if role == "stable":
        deployment.status = "deploying"
    deployment.status_reason = f"{action}: starting a model server for version {version.version}"
    events.emit(
        session,
        ROLLOUT_REQUESTED,
        {"deployment_id": str(deployment.id), "history_id": str(entry.id)},
        organization_id=project.organization_id,
        project_id=project.id,
    )
    _describe(session, project, deployment, f"deployment.{action}", {"version_id": str(version.id), "role": role})
    return entry


def _for_change(
    session: Session, access: Access, deployment_id: uuid.UUID, *, local_only: bool
) -> tuple[Deployment, Project]:
    # Locked, so two concurrent changes of one deployment queue instead of interleaving.
    deployment = get_deployment(session, access, deployment_id, WRITE)
    session.refresh(deployment, with_for_update=True)
    project = session.get_one(Project, deployment.project_id)
    if local_only and deployment.target != "local":
        raise InvalidState("Traffic changes apply to local deployments; for KServe, edit and apply the manifest")
    if deployment.status == "stopped":
        raise InvalidState("The deployment is stopped")
    in_flight = session.scalar(
        select(DeploymentHistory.id).where(
            DeploymentHistory.deployment_id == deployment.id, DeploymentHistory.outcome == "pending"
        )
    )
    if in_flight is not None:
        raise Conflict("Another change of this deployment is still in progress; retry when it has finished")
    return deployment, project


def _describe(
    session: Session, project: Project, deployment: Deployment, action: str, details: dict | None = None
) -> None:
    audit.describe(
        session,
        action=action,
        object_type="deployment",
        object_id=str(deployment.id),
        organization_id=project.organization_id,
        details=details or {"name": deployment.name},
    )
