"""Deployments: create, read, history, and the changes (canary, promote, rollback, shadow, stop, manifest)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session

from services.deployer.domain import deployments, kserve
from services.deployer.schemas import (
    BatchingRead,
    CanaryStart,
    DeploymentCreate,
    DeploymentRead,
    DeploymentUpdate,
    HistoryRead,
    RollbackRequest,
    ServerRead,
    ShadowSet,
    TrafficRead,
)
from shared.core.deps import AccessDep, MaxResults, PageToken, SessionDep
from shared.core.errors import InvalidState
from shared.core.pagination import Page, entity_page, sequence_page
from shared.db.models import Deployment

router = APIRouter(prefix="/api/v1/deployments", tags=["deployments"])


def _read_all(session: Session, items: Sequence[Deployment]) -> list[DeploymentRead]:
    ids = [item.id for item in items]
    servers, monitors = deployments.servers_by_deployment(session, ids), deployments.linked_monitors(session, ids)
    return [
        DeploymentRead.model_validate(item).model_copy(
            update={
                "servers": [ServerRead.model_validate(server) for server in servers[item.id]],
                "monitor_id": monitors.get(item.id),
                "batching": BatchingRead(**batching) if (batching := deployments.batching(item)) else None,
            }
        )
        for item in items
    ]


def _changed(request: Request, session: Session, deployment: Deployment) -> DeploymentRead:
    # This process's gateway sees the change at once; others within their routing-table TTL.
    gateway = getattr(request.app.state, "deployer_gateway", None)
    if gateway is not None:
        gateway.invalidate(deployment.id)
    return _read_all(session, [deployment])[0]


@router.post("", response_model=DeploymentRead, status_code=201, summary="Deploy a model version")
def create_deployment(
    body: DeploymentCreate, request: Request, session: SessionDep, access: AccessDep
) -> DeploymentRead:
    project_id = body.project_id or access.default_project(deployments.WRITE).id
    config: dict = {"env_manager": body.env_manager}
    if body.kserve is not None:
        config["kserve"] = body.kserve.model_dump(exclude_none=True)
    if body.batching is not None:
        config["batching"] = body.batching.model_dump()
    deployment = deployments.create_deployment(
        session,
        access,
        project_id=project_id,
        name=body.name,
        ref=body.required_version_ref(),
        target=body.target,
        canary=body.canary.model_dump(),
        config=config,
        replicas=body.replicas,
    )
    if body.monitor_id is not None:
        deployments.set_monitor(session, access, deployment.id, body.monitor_id)
    return _changed(request, session, deployment)


@router.patch(
    "/{deployment_id}",
    response_model=DeploymentRead,
    summary="Scale the replicas, set or turn off batching, link or unlink the monitor",
)
def update_deployment(
    deployment_id: uuid.UUID, body: DeploymentUpdate, request: Request, session: SessionDep, access: AccessDep
) -> DeploymentRead:
    changes = body.changes()
    if not changes:
        return get_deployment(deployment_id, session, access)
    if "replicas" in changes or "batching" in changes:
        deployments.update_serving(
            session,
            access,
            deployment_id,
            replicas=body.replicas,
            batching_settings=body.batching.model_dump() if body.batching is not None else None,
            clear_batching="batching" in changes and body.batching is None,
        )
    deployment = deployments.get_deployment(session, access, deployment_id)
    if "monitor_id" in changes:
        deployment = deployments.set_monitor(session, access, deployment_id, body.monitor_id)
    return _changed(request, session, deployment)


@router.get("", response_model=Page[DeploymentRead], summary="List deployments, newest first")
def list_deployments(
    session: SessionDep,
    access: AccessDep,
    project_id: uuid.UUID | None = None,
    page_token: PageToken = None,
    max_results: MaxResults = 100,
) -> dict[str, Any]:
    page = deployments.list_deployments(
        session, access, project_id=project_id, page_token=page_token, max_results=max_results
    )
    return {"items": _read_all(session, [row[0] for row in page.rows]), "next_page_token": page.next_page_token}


@router.get("/{deployment_id}", response_model=DeploymentRead, summary="Get a deployment")
def get_deployment(deployment_id: uuid.UUID, session: SessionDep, access: AccessDep) -> DeploymentRead:
    return _read_all(session, [deployments.get_deployment(session, access, deployment_id)])[0]


@router.get("/{deployment_id}/history", response_model=Page[HistoryRead], summary="Every change, newest first")
def history(
    deployment_id: uuid.UUID,
    session: SessionDep,
    access: AccessDep,
    page_token: PageToken = None,
    max_results: MaxResults = 100,
) -> dict[str, Any]:
    return entity_page(
        deployments.list_history(session, access, deployment_id, page_token=page_token, max_results=max_results)
    )


@router.get(
    "/{deployment_id}/traffic",
    response_model=Page[TrafficRead],
    summary="Requests, errors and latency per version and role, as this process's gateway served them",
)
def traffic(
    deployment_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    access: AccessDep,
    page_token: PageToken = None,
    max_results: MaxResults = 100,
) -> dict[str, Any]:
    deployments.get_deployment(session, access, deployment_id)
    gateway = getattr(request.app.state, "deployer_gateway", None)
    rows = [
        TrafficRead(role=role, model_version_id=version_id, version=version, **asdict(counts))
        for role, version_id, version, counts in (gateway.traffic(deployment_id) if gateway else [])
    ]
    return sequence_page(rows, page_token=page_token, max_results=max_results)


@router.post("/{deployment_id}/canary", response_model=DeploymentRead, summary="Start a canary at N %")
def start_canary(
    deployment_id: uuid.UUID, body: CanaryStart, request: Request, session: SessionDep, access: AccessDep
) -> DeploymentRead:
    deployment = deployments.start_canary(
        session, access, deployment_id, body.required_version_ref(), body.start_percent(), plan=body.plan()
    )
    return _changed(request, session, deployment)


@router.post("/{deployment_id}/promote", response_model=DeploymentRead, summary="Promote the canary to 100 %")
def promote(deployment_id: uuid.UUID, request: Request, session: SessionDep, access: AccessDep) -> DeploymentRead:
    return _changed(request, session, deployments.promote(session, access, deployment_id))


@router.post(
    "/{deployment_id}/rollback",
    response_model=DeploymentRead,
    summary="Drop the canary, or return to the previous healthy version",
)
def rollback(
    deployment_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    access: AccessDep,
    body: RollbackRequest | None = None,
) -> DeploymentRead:
    deployment = deployments.rollback(session, access, deployment_id, body.reason if body else None)
    return _changed(request, session, deployment)


@router.post("/{deployment_id}/shadow", response_model=DeploymentRead, summary="Set or unset the shadow version")
def set_shadow(
    deployment_id: uuid.UUID, body: ShadowSet, request: Request, session: SessionDep, access: AccessDep
) -> DeploymentRead:
    deployment = deployments.set_shadow(session, access, deployment_id, body.version_ref(), body.percent)
    return _changed(request, session, deployment)


@router.post("/{deployment_id}/stop", response_model=DeploymentRead, summary="Stop serving")
def stop(deployment_id: uuid.UUID, request: Request, session: SessionDep, access: AccessDep) -> DeploymentRead:
    return _changed(request, session, deployments.stop(session, access, deployment_id))


@router.get(
    "/{deployment_id}/manifest",
    summary="The KServe InferenceService manifest (validated), for kubectl apply",
    response_class=Response,
    responses={200: {"content": {"application/yaml": {}, "application/json": {}}}},
)
def manifest(
    deployment_id: uuid.UUID,
    session: SessionDep,
    access: AccessDep,
    format: Literal["yaml", "json"] = "yaml",
) -> Response:
    deployment = deployments.get_deployment(session, access, deployment_id)
    if deployment.target != "kserve":
        raise InvalidState("Manifests are rendered for deployments with target 'kserve'")
    text = kserve.dump_manifest(deployments.render_manifest(session, deployment), format)
    filename = f"{kserve.dns1035_name(deployment.name)}.{format}"
    return Response(
        content=text,
        media_type="application/json" if format == "json" else "application/yaml",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )
