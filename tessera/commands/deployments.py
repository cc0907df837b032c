"""`tessera deployments`: deploy a model version (by model name with a version or an alias), list, show,
canary, promote, roll back, scale, batch, stop, and read the history — the deployer's REST API from a
terminal."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer

from tessera.commands.api import Api, CommandError, LimitOption, command_group, connected
from tessera.commands.output import Column, show_items, show_record, stderr, wait_until

app = command_group("Deploy model versions, and canary, promote or roll them back.")

PATH = "/api/v1/deployments"
# While a deployment is in one of these, the worker has not finished what was asked.
SETTLING = ("pending", "building_environment", "deploying")

ModelOption = Annotated[str | None, typer.Option("--model", "-m", help="Registered model name", show_default=False)]
VersionOption = Annotated[int | None, typer.Option("--version", "-v", min=1, help="Version number of --model")]
AliasOption = Annotated[str | None, typer.Option("--alias", "-a", help="Alias of --model, e.g. champion")]
VersionIdOption = Annotated[str | None, typer.Option("--version-id", help="A model version's id instead")]
WaitOption = Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until the worker has rolled it out")]
TimeoutOption = Annotated[float, typer.Option("--timeout", help="Seconds to wait at most")]
EnvManagerChoice = Literal["auto", "virtualenv", "local"]
DeploymentArgument = Annotated[str, typer.Argument(help="Deployment id or name")]
ReplicasOption = Annotated[
    int | None, typer.Option("--replicas", "-r", min=1, max=32, help="Model-server processes per version")
]
BatchSizeOption = Annotated[
    int | None,
    typer.Option("--max-batch-size", min=2, help="Batch concurrent requests, up to this many per model call"),
]
BatchLatencyOption = Annotated[
    float, typer.Option("--max-latency-ms", min=0, help="How long a batch waits for more requests")
]


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
        ("replicas", "replicas"),
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
        ("batching", _batching),
        ("target", "target"),
        ("endpoint", "endpoint_url"),
        ("servers", lambda row: [_server(server) for server in row["servers"]]),
        ("project", "project_id"),
        ("created", "created_at"),
    ]


def _server(server: dict[str, Any]) -> str:
    # A server still starting has no port yet.
    port = f" :{server['port']}" if server["port"] else ""
    return f"{server['role']} #{server['replica']} {server['state']}{port}"


def _batching(row: dict[str, Any]) -> str:
    batching = row.get("batching")
    if not batching:
        return "off"
    return f"up to {batching['max_batch_size']} requests, {batching['max_latency_ms']:g} ms"


def _batching_body(max_batch_size: int | None, max_latency_ms: float) -> dict[str, Any] | None:
    return None if max_batch_size is None else {"max_batch_size": max_batch_size, "max_latency_ms": max_latency_ms}


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
@connected
def deploy(
    name: Annotated[str, typer.Argument(help="The deployment's name")],
    model: ModelOption = None,
    version: VersionOption = None,
    alias: AliasOption = None,
    version_id: VersionIdOption = None,
    monitor: Annotated[str | None, typer.Option(help="Link this monitor (id): it receives the predictions")] = None,
    project: Annotated[str | None, typer.Option(help="Project id (default: the API key's)")] = None,
    replicas: ReplicasOption = None,
    max_batch_size: BatchSizeOption = None,
    max_latency_ms: BatchLatencyOption = 5.0,
    env_manager: Annotated[
        EnvManagerChoice | None,
        typer.Option(
            help="Python environment of the model server: auto (its own when the model's logged requirements "
            "need one), virtualenv (always its own), local (the platform's) [default: auto]",
            show_default=False,
        ),
    ] = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = 300.0,
    *,
    api: Api,
    as_json: bool,
) -> None:
    """Deploy a model version, e.g. `tessera deployments deploy churn-prod --model churn --alias champion`."""
    body = {
        "name": name,
        **version_ref(model, version, alias, version_id),
        "monitor_id": monitor,
        "project_id": project,
        "replicas": replicas,
        "batching": _batching_body(max_batch_size, max_latency_ms),
        "env_manager": env_manager,
    }
    deployment = api.post(PATH, {key: value for key, value in body.items() if value is not None})
    if wait:
        deployment = _settled(api, deployment, timeout)
    _show(api, deployment, as_json)


@app.command("list")
@connected
def list_deployments(
    project: Annotated[str | None, typer.Option(help="Only this project's (id)")] = None,
    limit: LimitOption = None,
    *,
    api: Api,
    as_json: bool,
) -> None:
    """Deployments, newest first."""
    items = api.items(PATH, limit=limit, project_id=project)
    show_items(items, _columns(api), as_json=as_json, title="Deployments")


@app.command()
@connected
def show(deployment: DeploymentArgument, *, api: Api, as_json: bool) -> None:
    """One deployment: status, versions, servers, linked monitor."""
    _show(api, api.find(PATH, deployment, "deployment"), as_json)


@app.command()
@connected
def history(deployment: DeploymentArgument, limit: LimitOption = None, *, api: Api, as_json: bool) -> None:
    """Every change of a deployment, newest first."""
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
@connected
def canary(
    deployment: DeploymentArgument,
    percent: Annotated[int, typer.Option(min=1, max=100, help="Share of traffic for the canary")],
    model: ModelOption = None,
    version: VersionOption = None,
    alias: AliasOption = None,
    version_id: VersionIdOption = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = 300.0,
    *,
    api: Api,
    as_json: bool,
) -> None:
    """Send a share of the traffic to another version (promote or roll back afterwards)."""
    body = {**version_ref(model, version, alias, version_id), "percent": percent}
    _change(api, deployment, "canary", body, wait=wait, timeout=timeout, as_json=as_json)


@app.command()
@connected
def promote(deployment: DeploymentArgument, *, api: Api, as_json: bool) -> None:
    """Make the canary the stable version, at 100 %."""
    _change(api, deployment, "promote", None, wait=False, timeout=0, as_json=as_json)


@app.command()
@connected
def rollback(
    deployment: DeploymentArgument,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the history)")] = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = 300.0,
    *,
    api: Api,
    as_json: bool,
) -> None:
    """Drop the canary, or return to the previous healthy version."""
    _change(api, deployment, "rollback", {"reason": reason}, wait=wait, timeout=timeout, as_json=as_json)


@app.command()
@connected
def update(
    deployment: DeploymentArgument,
    replicas: ReplicasOption = None,
    max_batch_size: BatchSizeOption = None,
    max_latency_ms: BatchLatencyOption = 5.0,
    no_batching: Annotated[bool, typer.Option("--no-batching", help="Turn request batching off")] = False,
    *,
    api: Api,
    as_json: bool,
) -> None:
    """Scale the replicas or set batching, e.g. `tessera deployments update churn-prod --replicas 3
    --max-batch-size 32`; new replicas start within seconds."""
    if no_batching and max_batch_size is not None:
        raise CommandError("Give --max-batch-size or --no-batching, not both")
    body: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    if no_batching or max_batch_size is not None:
        body["batching"] = _batching_body(max_batch_size, max_latency_ms)
    if not body:
        raise CommandError("Nothing to change: give --replicas, --max-batch-size or --no-batching")
    found = api.find(PATH, deployment, "deployment")
    _show(api, api.request("PATCH", f"{PATH}/{found['id']}", json=body), as_json)


@app.command()
@connected
def stop(deployment: DeploymentArgument, *, api: Api, as_json: bool) -> None:
    """Stop serving (the model servers are stopped by the worker)."""
    _change(api, deployment, "stop", None, wait=False, timeout=0, as_json=as_json)
    stderr().print("Stopped.")
