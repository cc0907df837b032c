"""Deployments: the list, one deployment's traffic split with live counts, its history, and the buttons
that roll back, promote or abort a canary."""

from __future__ import annotations

from fastapi import APIRouter

from tessera.console import lookup
from tessera.console.api import ApiError
from tessera.console.web import PAGE_SIZE, ConsoleDep, parse_uuid

router = APIRouter(prefix="/deployments")

# What each button asks the API for, and how the outcome reads.
ACTIONS = {
    "rollback": ("rollback", "Rolled back"),
    "abort": ("rollback", "Canary aborted"),
    "promote": ("promote", "Canary promoted to 100 %"),
}


@router.get("")
async def deployment_list(c: ConsoleDep, page_token: str | None = None, fragment: str | None = None):
    page = await c.api.page(
        "/api/v1/deployments",
        page_token=page_token,
        max_results=PAGE_SIZE,
        project_id=str(c.project["id"]) if c.project else None,
    )
    labels = await lookup.version_labels(
        c.request, [v for d in page.items for v in (d["model_version_id"], d["canary_version_id"])]
    )
    template = "deployments/rows.html" if fragment == "rows" else "deployments/list.html"
    return c.render(template, section="deployments", page=page, labels=labels)


async def _detail(c, deployment_id: str, outcome: dict | None = None, status_code: int = 200):
    deployment = await c.api.get(f"/api/v1/deployments/{parse_uuid(deployment_id)}")
    history = (await c.api.page(f"/api/v1/deployments/{deployment_id}/history", max_results=100)).items
    traffic = (await c.api.page(f"/api/v1/deployments/{deployment_id}/traffic")).items
    versions = [deployment["model_version_id"], deployment["canary_version_id"], deployment["shadow_version_id"]]
    versions += [v for h in history for v in (h["from_version_id"], h["to_version_id"])]
    labels = await lookup.version_labels(c.request, versions)
    actors = await lookup.user_emails(c.request, [h["actor_id"] for h in history])
    return c.render(
        "deployments/detail.html",
        status_code=status_code,
        section="deployments",
        d=deployment,
        history=history,
        traffic=traffic,
        labels=labels,
        actors=actors,
        outcome=outcome,
        can_write=c.can_write(deployment["project_id"]),
    )


@router.get("/{deployment_id}")
async def deployment_detail(c: ConsoleDep, deployment_id: str):
    return await _detail(c, deployment_id)


@router.get("/{deployment_id}/traffic")
async def deployment_traffic(c: ConsoleDep, deployment_id: str):
    """The live counts alone, polled by the detail page."""
    deployment = await c.api.get(f"/api/v1/deployments/{parse_uuid(deployment_id)}")
    traffic = (await c.api.page(f"/api/v1/deployments/{deployment_id}/traffic")).items
    labels = await lookup.version_labels(c.request, [t["model_version_id"] for t in traffic])
    return c.render("deployments/traffic.html", d=deployment, traffic=traffic, labels=labels)


@router.post("/{deployment_id}/{action}")
async def deployment_action(c: ConsoleDep, deployment_id: str, action: str):
    if action not in ACTIONS:
        raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No action '{action}'")
    endpoint, done = ACTIONS[action]
    form = await c.request.form()
    reason = str(form.get("reason") or "").strip() or None
    if action == "abort":
        reason = reason or "canary aborted from the console"
    try:
        await c.api.post(
            f"/api/v1/deployments/{parse_uuid(deployment_id)}/{endpoint}",
            {"reason": reason} if endpoint == "rollback" else None,
        )
    except ApiError as exc:
        if exc.status == 404:
            raise
        return await _detail(c, deployment_id, {"kind": "error", "text": exc.message}, status_code=exc.status)
    return await _detail(c, deployment_id, {"kind": "ok", "text": done})
