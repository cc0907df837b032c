"""MLflow's proxied artifact API (`mlflow-artifacts:` URIs) and the server-info capability probe.

Uploads and downloads stream in chunks; the database is only used to check that the path's experiment
belongs to a project the caller may use (see domain/artifacts.py).
"""

from __future__ import annotations

import mimetypes

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from services.tracking.api.common import QueryParams, respond
from services.tracking.domain import artifacts, experiments
from shared.core.artifacts import get_artifact_store
from shared.core.deps import AccessDep, SessionDep, SettingsDep

router = APIRouter(tags=["mlflow-artifacts"])
server_info_router = APIRouter(tags=["mlflow-tracking"])


@router.get("/artifacts")
def list_artifacts(query: QueryParams, session: SessionDep, access: AccessDep, settings: SettingsDep) -> Response:
    entries = artifacts.list_artifacts(session, access, get_artifact_store(settings), query.get("path"))
    files = []
    for entry in entries:
        item: dict = {"path": entry.name, "is_dir": entry.is_dir}
        if entry.size is not None:
            item["file_size"] = entry.size
        files.append(item)
    return respond({"files": files})


@router.get("/artifacts/{path:path}")
def download_artifact(path: str, session: SessionDep, access: AccessDep, settings: SettingsDep) -> Response:
    key = artifacts.storage_key(session, access, path, experiments.READ)
    chunks = get_artifact_store(settings).read(key)
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return StreamingResponse(chunks, media_type=media_type)


@router.put("/artifacts/{path:path}")
async def upload_artifact(
    path: str, request: Request, session: SessionDep, access: AccessDep, settings: SettingsDep
) -> Response:
    key = await run_in_threadpool(artifacts.storage_key, session, access, path, experiments.WRITE, "artifact.upload")
    handle = await run_in_threadpool(get_artifact_store(settings).open_write, key)
    try:
        async for chunk in request.stream():
            if chunk:
                await run_in_threadpool(handle.write, chunk)
    finally:
        await run_in_threadpool(handle.close)
    return respond()


@router.delete("/artifacts/{path:path}")
def delete_artifact(path: str, session: SessionDep, access: AccessDep, settings: SettingsDep) -> Response:
    artifacts.delete_artifact(session, access, get_artifact_store(settings), path)
    return respond()


@server_info_router.get("/server-info")
def server_info() -> Response:
    """What the mlflow client probes before artifact transfers: proxied, single-request uploads."""
    return respond(
        {
            "store_type": "SqlStore",
            "workspaces_enabled": False,
            "trace_archival_enabled": False,
            "multipart_uploads_enabled": False,
            "multipart_downloads_enabled": False,
            "presigned_upload_run_id_supported": False,
            "presigned_upload_model_id_supported": False,
            "features_enabled": {"gateway": False},
        }
    )
