"""Models: a project's registered models, a model's versions, and one version's lineage — the training run
(in MLflow's UI), stage and aliases, the deployments serving it, its monitors' drift reports and alerts.

URLs carry the model's name and version number (/console/models/<name>/versions/<n>), the same as MLflow's
UI (#/models/<name>/versions/<n>), so either can be reached from the other by editing the address."""

from __future__ import annotations

from fastapi import APIRouter

from tessera.console import lookup
from tessera.console.api import ApiError
from tessera.console.web import PAGE_SIZE, Console, ConsoleDep

router = APIRouter(prefix="/models")


def _listed_project(c: Console) -> dict | None:
    return c.project or (c.projects[0] if c.projects else None)


@router.get("")
async def model_list(c: ConsoleDep, q: str | None = None, page_token: str | None = None, fragment: str | None = None):
    project = _listed_project(c)
    page = None
    if project is not None:
        page = await c.api.page(
            f"/api/v1/projects/{project['id']}/models", page_token=page_token, max_results=PAGE_SIZE, q=q
        )
    template = "models/rows.html" if fragment == "rows" else "models/list.html"
    return c.render(template, section="models", page=page, listed=project, q=q or "")


async def _find_model(c: Console, name: str) -> dict:
    for project_id in c.project_ids:
        found = await c.api.page(f"/api/v1/projects/{project_id}/models", q=name, max_results=100)
        for model in found.items:
            if model["name"] == name:
                return model
    raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Model '{name}' does not exist in the chosen organization")


@router.get("/{name}")
async def model_detail(c: ConsoleDep, name: str, page_token: str | None = None, fragment: str | None = None):
    model = await _find_model(c, name)
    page = await c.api.page(f"/api/v1/models/{model['id']}/versions", page_token=page_token, max_results=PAGE_SIZE)
    template = "models/version_rows.html" if fragment == "rows" else "models/detail.html"
    return c.render(template, section="models", model=model, page=page)


@router.get("/{name}/versions/{number}")
async def version_lineage(c: ConsoleDep, name: str, number: int):
    model = await _find_model(c, name)
    version_id = await lookup.version_id(c.request, model["id"], number)
    if version_id is None:
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Version {number} of model '{name}' does not exist")
    lineage = await c.api.get(f"/api/v1/model-versions/{version_id}/lineage")
    alerts = []
    for monitor in lineage["monitors"]:
        alerts += (await c.api.page("/api/v1/alerts", monitor_id=monitor["id"], max_results=20)).items
    return c.render(
        "models/lineage.html", section="models", model=model, lineage=lineage, v=lineage["model_version"], alerts=alerts
    )
