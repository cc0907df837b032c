"""`tessera deployments`: deploy a model version (by model name with a version or an alias), list, show,
canary, promote, roll back, stop, and read the history — the deployer's REST API from a terminal."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tessera.commands.api import (
    DEFAULT_URL,
    Api,
    ApiKeyOption,
    CommandError,
    JsonOption,
    LimitOption,
    UrlOption,
    command_group,
)
from tessera.commands.output import Column, show_items, show_record, stderr, wait_until

app = command_group("Deploy model versions, and canary, promote or roll them back.")

PATH = "/api/v1/deployments"
# While a deployment is in one of these, the worker has not finished what was asked.
SETTLING = ("pending", "deploying")

ModelOption = Annotated[str | None, typer.Option("--model", "-m", help="Registered model name", show_default=False)]
VersionOption = Annotated[int | None, typer.Option("--version", "-v", min=1, help="Version number of --model")]
AliasOption = Annotated[str | None, typer.Option("--alias", "-a", help="Alias of --model, e.g. champion")]
VersionIdOption = Annotated[str | None, typer.Option("--version-id", help="A model version's id instead")]
WaitOption = Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until the worker has rolled it out")]
TimeoutOption = Annotated[float, typer.Option("--timeout", help="Seconds to wait at most")]
DeploymentArgument = Annotated[str, typer.Argument(help="Deployment id or name")]


def version_ref(model: str | None, version: int | None, alias: str | None, version_id: str | None) -> dict[str, Any]:
    """The API's three ways of naming a model version, from the command's options."""
    if version_id is not None:
        if model or version or alias:
            raise CommandError("Give --version-id alone, or --model with --version or --alias")
        return {"model_version_id": version_id}
    if model is None or (version is None) == (alias is None):
        raise CommandError("Name the model version: --model NAME with --version N or --alias ALIAS")
    return {"model": model, "version": version} if version is not None else {"model": model, "alias": alias}


def _columns(api: Api) -> list[Column]:
    return [
        ("name", "name"),
        ("status", "status"),
        ("model", lambda row: api.version_label(row["model_version_id"])),
        ("canary", lambda row: _canary(api, row)),
        ("monitor", "monitor_id"),
        ("id", "id"),
        ("updated", "updated_at"),
    ]


def _canary(api: Api, row: dict[str, Any]) -> str:
    if not row.get("canary_version_id"):
        return ""
    return f"{api.version_label(row['canary_version_id'])} at {row['canary_percent']} %"


def _fields(api: Api) -> list[Column]:
    return [
        *_columns(api),
        ("reason", "status_reason"),
        ("shadow", lambda row: api.version_label(row.get("shadow_version_id"))),
        ("target", "target"),
        ("endpoint", "endpoint_url"),
        ("servers", lambda row: [f"{server['role']} {server['state']} :{server['port']}" for server in row["servers"]]),
        ("project", "project_id"),
        ("created", "created_at"),
    ]


def _show(api: Api, deployment: dict[str, Any], as_json: bool) -> None:
    show_record(deployment, _fields(api), as_json=as_json, title=f"Deployment {deployment['name']}")


def _latest_change(api: Api, deployment_id: str) -> dict[str, Any]:
    items = api.get(f"{PATH}/{deployment_id}/history", max_results=1)["items"]
    return items[0] if items else {}


def _settled(api: Api, deployment: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The deployment once the worker has carried out the change just asked for (its history entry is no
    longer pending); a failed change exits non-zero with its reason."""
    wait_until(
        f"deployment {deployment['name']}",
        lambda: api.get(f"{PATH}/{deployment['id']}"),
        lambda row: row["status"] not in SETTLING and _latest_change(api, row["id"]).get("outcome") != "pending",
        timeout=timeout,
        status=lambda row: row.get("status_reason") or row["status"],
    )
    # Read again: the row polled last may predate the change's end, which the history check saw.
    final = api.get(f"{PATH}/{deployment['id']}")
    change = _latest_change(api, final["id"])
    if final["status"] == "failed" or change.get("outcome") == "failed":
        reason = final.get("status_reason") or change.get("reason") or "no reason given"
        raise CommandError(f"Deployment {final['name']}: {reason}")
    return final


def _change(api: Api, ref: str, action: str, body: Any, *, wait: bool, timeout: float, as_json: bool) -> None:
    deployment = api.find(PATH, ref, "deployment")
    changed = api.post(f"{PATH}/{deployment['id']}/{action}", body)
    if wait:
        changed = _settled(api, changed, timeout)
    _show(api, changed, as_json)


@app.command()
def deploy(
    name: Annotated[str, typer.Argument(help="The deployment's name")],
    model: ModelOption = None,
    version: VersionOption = None,
    alias: AliasOption = None,
    version_id: VersionIdOption = None,
    monitor: Annotated[str | None, typer.Option(help="Link this monitor (id): it receives the predictions")] = None,
    project: Annotated[str | None, typer.Option(help="Project id (default: the API key's)")] = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = 300.0,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Deploy a model version, e.g. `tessera deployments deploy churn-prod --model churn --alias champion`."""
    body = {
        "name": name,
        **version_ref(model, version, alias, version_id),
        "monitor_id": monitor,
        "project_id": project,
    }
    with Api(url, api_key) as api:
        deployment = api.post(PATH, {key: value for key, value in body.items() if value is not None})
        if wait:
            deployment = _settled(api, deployment, timeout)
        _show(api, deployment, as_json)


@app.command("list")
def list_deployments(
    project: Annotated[str | None, typer.Option(help="Only this project's (id)")] = None,
    limit: LimitOption = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Deployments, newest first."""
    with Api(url, api_key) as api:
        items = api.items(PATH, limit=limit, project_id=project)
        show_items(items, _columns(api), as_json=as_json, title="Deployments")


@app.command()
def show(
    deployment: DeploymentArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """One deployment: status, versions, servers, linked monitor."""
    with Api(url, api_key) as api:
        _show(api, api.find(PATH, deployment, "deployment"), as_json)


@app.command()
def history(
    deployment: DeploymentArgument,
    limit: LimitOption = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every change of a deployment, newest first."""
    with Api(url, api_key) as api:
        found = api.find(PATH, deployment, "deployment")
        items = api.items(f"{PATH}/{found['id']}/history", limit=limit)
        columns: list[Column] = [
            ("when", "created_at"),
            ("action", "action"),
            ("outcome", "outcome"),
            ("from", lambda row: api.version_label(row["from_version_id"])),
            ("to", lambda row: api.version_label(row["to_version_id"])),
            ("reason", "reason"),
        ]
        show_items(items, columns, as_json=as_json, title=f"History of {found['name']}")


@app.command()
def canary(
    deployment: DeploymentArgument,
    percent: Annotated[int, typer.Option(min=1, max=100, help="Share of traffic for the canary")],
    model: ModelOption = None,
    version: VersionOption = None,
    alias: AliasOption = None,
    version_id: VersionIdOption = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = 300.0,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send a share of the traffic to another version (promote or roll back afterwards)."""
    body = {**version_ref(model, version, alias, version_id), "percent": percent}
    with Api(url, api_key) as api:
        _change(api, deployment, "canary", body, wait=wait, timeout=timeout, as_json=as_json)


@app.command()
def promote(
    deployment: DeploymentArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make the canary the stable version, at 100 %."""
    with Api(url, api_key) as api:
        _change(api, deployment, "promote", None, wait=False, timeout=0, as_json=as_json)


@app.command()
def rollback(
    deployment: DeploymentArgument,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the history)")] = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = 300.0,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Drop the canary, or return to the previous healthy version."""
    with Api(url, api_key) as api:
        _change(api, deployment, "rollback", {"reason": reason}, wait=wait, timeout=timeout, as_json=as_json)


@app.command()
def stop(
    deployment: DeploymentArgument,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop serving (the model servers are stopped by the worker)."""
    with Api(url, api_key) as api:
        _change(api, deployment, "stop", None, wait=False, timeout=0, as_json=as_json)
        stderr().print("Stopped.")
