"""`tessera monitors`: create a monitor from a reference file and a spec, list them, run a check and wait for
it, and show the latest report's verdict per column — the monitor's REST API from a terminal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tessera.commands.api import Api, CommandError, LimitOption, command_group, connected
from tessera.commands.deployments import PATH as DEPLOYMENTS
from tessera.commands.deployments import AliasOption, ModelOption, VersionOption, version_ref
from tessera.commands.output import Column, print_json, show_items, show_record, stderr, wait_until

app = command_group("Watch served predictions for drift: create monitors, run checks, read reports.")

PATH = "/api/v1/monitors"
CHECK_RUNNING = ("queued", "running")
MonitorArgument = Annotated[str, typer.Argument(help="Monitor id or name")]

_COLUMNS: list[Column] = [
    ("name", "name"),
    ("deployment", "deployment_id"),
    ("model version", "model_version_id"),
    ("enabled", "enabled"),
    ("window (s)", "window_s"),
    ("min rows", "min_rows"),
    ("last check", "last_check_at"),
    ("id", "id"),
]
_REPORT_SUMMARY: list[Column] = [
    ("dataset drift", "dataset_drift"),
    ("drifted columns", lambda row: f"{row['number_of_drifted_columns']} of {row['number_of_columns']}"),
    ("drift share", "drift_share"),
    ("current rows", "current_rows"),
    ("window", lambda row: f"{row.get('window_start') or ''} to {row.get('window_end') or ''}"),
    ("status", "status"),
    ("report", "id"),
]
_COLUMN_VERDICTS: list[Column] = [
    ("column", "column"),
    ("type", "column_type"),
    ("method", "method"),
    ("score", "score"),
    ("threshold", "threshold"),
    ("verdict", lambda row: _verdict(row)),
    ("missing", lambda row: None if row.get("missing_share") is None else f"{row['missing_share']:.1%}"),
]


def _verdict(column: dict[str, Any]) -> str:
    if column["status"] != "ok":
        return column["status"].replace("_", " ")
    return "drift" if column["drift"] else "no drift"


def _spec(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CommandError(f"Cannot read the spec {path}: {error}") from None
    if not isinstance(spec, dict):
        raise CommandError(f"The spec {path} must be a JSON object")
    return spec


@app.command()
@connected
def create(
    name: Annotated[str, typer.Argument(help="The monitor's name")],
    reference: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="Reference data (.csv or .parquet), e.g. the training set")
    ],
    spec: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="JSON spec (window_s, min_rows, methods, thresholds, …)"),
    ] = None,
    deployment: Annotated[str | None, typer.Option(help="Watch this deployment (id or name)")] = None,
    model: ModelOption = None,
    version: VersionOption = None,
    alias: AliasOption = None,
    *,
    api: Api,
    as_json: bool,
) -> None:
    """Create a monitor of a deployment (or a model version) with a reference file; the options override the
    spec's fields."""
    fields = _spec(spec) | {"name": name}
    if model is not None:
        fields |= version_ref(model, version, alias, None)
    if deployment is not None:
        fields["deployment_id"] = api.find(DEPLOYMENTS, deployment, "deployment")["id"]
    with reference.open("rb") as data:
        created = api.post(PATH, data={"spec": json.dumps(fields)}, files={"reference": (reference.name, data)})
    show_record(created, _COLUMNS, as_json=as_json, title=f"Monitor {created['name']}")


@app.command("list")
@connected
def list_monitors(
    project: Annotated[str | None, typer.Option(help="Only this project's (id)")] = None,
    limit: LimitOption = None,
    *,
    api: Api,
    as_json: bool,
) -> None:
    """Monitors, newest first."""
    show_items(api.items(PATH, limit=limit, project_id=project), _COLUMNS, as_json=as_json, title="Monitors")


@app.command()
@connected
def check(
    monitor: MonitorArgument,
    timeout: Annotated[float, typer.Option(help="Seconds to wait at most")] = 300.0,
    fail_on_drift: Annotated[bool, typer.Option(help="Exit with status 1 when the check finds dataset drift")] = False,
    *,
    api: Api,
    as_json: bool,
) -> None:
    """Run a check now and wait for it; prints its report's summary."""
    found = api.find(PATH, monitor, "monitor")
    run = api.post(f"{PATH}/{found['id']}/checks")
    run = wait_until(
        f"check of {found['name']}",
        lambda: api.get(f"{PATH}/{found['id']}/checks/{run['id']}"),
        lambda row: row["status"] not in CHECK_RUNNING,
        timeout=timeout,
        status=lambda row: row["status"],
        fraction=lambda row: row.get("progress"),
    )
    if run["status"] == "failed":
        raise CommandError(f"The check of {found['name']} failed: {run.get('error') or 'no reason given'}")
    report = api.get(f"/api/v1/drift-reports/{run['report_id']}") if run.get("report_id") else None
    if as_json:
        print_json({"check": run, "report": report})
    elif report is None:
        stderr().print(f"Check {run['status'].replace('_', ' ')}: no report.")
    else:
        show_record(report, _REPORT_SUMMARY, as_json=False, title=f"Check of {found['name']}: {run['status']}")
    if fail_on_drift and report is not None and report.get("dataset_drift"):
        raise typer.Exit(1)


@app.command()
@connected
def report(monitor: MonitorArgument, *, api: Api, as_json: bool) -> None:
    """The latest drift report: the verdict of every column."""
    found = api.find(PATH, monitor, "monitor")
    latest = api.items(f"{PATH}/{found['id']}/reports", limit=1)
    if not latest:
        raise CommandError(f"Monitor {found['name']} has no report yet; run `tessera monitors check`")
    full = api.get(f"/api/v1/drift-reports/{latest[0]['id']}")
    if as_json:
        print_json(full)
        return
    show_record(full, _REPORT_SUMMARY, as_json=False, title=f"Latest report of {found['name']}")
    columns = [{"column": name, **column} for name, column in full["report"].get("columns", {}).items()]
    show_items(columns, _COLUMN_VERDICTS, as_json=False, title="Columns")
