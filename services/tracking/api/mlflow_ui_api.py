"""What MLflow's UI asks besides the REST API the mlflow client uses, answered as MLflow's server does.

- `/graphql`: the two queries the UI sends (`MlflowGetExperimentQuery`, `GetRun`), executed by graphql-core
  against the part of MLflow's schema they select from, with Tessera's data (and tenancy: what the caller
  cannot see comes back as the `apiError` MLflow returns for a missing object).
- Artifacts below a run or a logged model: `artifacts/list`, `/get-artifact`, and the logged-model
  `artifacts/directories` and `artifacts/files`, sent as attachments (never rendered on Tessera's origin).
- GenAI features Tessera does not offer (traces, evaluation datasets, scorers, review queues, the AI
  gateway, the assistant, MCP servers): the answers MLflow's server gives when there is nothing there, so
  each page shows its own empty state.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from graphql import GraphQLResolveInfo, GraphQLScalarType, GraphQLSchema, build_schema, graphql_sync
from sqlalchemy.orm import Session

from services.tracking.api import render
from services.tracking.api.common import JsonBody, QueryParams, respond
from services.tracking.domain import artifacts, experiments, lineage, logged_models, runs
from shared.core.artifacts import get_artifact_store
from shared.core.auth import Access
from shared.core.deps import AccessDep, PrincipalDep, SessionDep, SettingsDep
from shared.core.errors import InvalidParameter, TesseraError
from shared.core.web import artifact_download

pages = APIRouter(tags=["mlflow-ui"], include_in_schema=False)
api_v2 = APIRouter(tags=["mlflow-ui"], include_in_schema=False)
api_v3 = APIRouter(tags=["mlflow-ui"], include_in_schema=False)


# --- GraphQL --------------------------------------------------------------------------------------------

# MLflow's schema (mlflow/server/graphql), the types the UI's two queries reach; names are MLflow's, so
# the `__typename`s the UI's Apollo cache keys on are the same.
_SCHEMA_SDL = """
directive @component(name: String!) on QUERY | MUTATION
scalar LongString
type Query {
  mlflowGetExperiment(input: MlflowGetExperimentInput): MlflowGetExperimentResponse
  mlflowGetRun(input: MlflowGetRunInput): MlflowGetRunResponse
}
input MlflowGetExperimentInput { experimentId: String }
input MlflowGetRunInput { runId: String runUuid: String }
type ErrorDetail { field: String message: String }
type ApiError { code: String message: String helpUrl: String traceId: String errorDetails: [ErrorDetail] }
type MlflowGetExperimentResponse { experiment: MlflowExperiment apiError: ApiError }
type MlflowExperimentTag { key: String value: String }
type MlflowExperiment {
  experimentId: String name: String artifactLocation: String lifecycleStage: String
  lastUpdateTime: LongString creationTime: LongString tags: [MlflowExperimentTag!]
  effectiveTraceArchivalRetention: String workspace: String
}
type MlflowGetRunResponse { run: MlflowRunExtension apiError: ApiError }
enum MlflowRunStatus { RUNNING SCHEDULED FINISHED FAILED KILLED }
type MlflowRunInfo {
  runId: String runUuid: String runName: String experimentId: String userId: String status: MlflowRunStatus
  startTime: LongString endTime: LongString artifactUri: String lifecycleStage: String
}
type MlflowMetricExtension {
  key: String value: Float timestamp: LongString step: LongString datasetName: String datasetDigest: String
  modelId: String runId: String
}
type MlflowParam { key: String value: String }
type MlflowRunTag { key: String value: String }
type MlflowRunData { metrics: [MlflowMetricExtension!] params: [MlflowParam!] tags: [MlflowRunTag!] }
type MlflowInputTag { key: String value: String }
type MlflowDataset { name: String digest: String sourceType: String source: String schema: String profile: String }
type MlflowDatasetInput { tags: [MlflowInputTag!] dataset: MlflowDataset }
type MlflowModelInput { modelId: String }
type MlflowRunInputs { datasetInputs: [MlflowDatasetInput!] modelInputs: [MlflowModelInput!] }
type MlflowModelOutput { modelId: String step: LongString }
type MlflowRunOutputs { modelOutputs: [MlflowModelOutput!] }
enum MlflowModelVersionStatus { PENDING_REGISTRATION FAILED_REGISTRATION READY }
type MlflowModelVersion { name: String version: String status: MlflowModelVersionStatus source: String runId: String }
type MlflowRunExtension {
  info: MlflowRunInfo data: MlflowRunData inputs: MlflowRunInputs outputs: MlflowRunOutputs
  experiment: MlflowExperiment modelVersions: [MlflowModelVersion!]
}
"""


def _long_string(value: Any) -> str | None:
    return None if value is None else str(value)


def _schema() -> GraphQLSchema:
    schema = build_schema(_SCHEMA_SDL)
    long_string = schema.type_map["LongString"]
    assert isinstance(long_string, GraphQLScalarType)
    long_string.serialize = _long_string  # type: ignore[method-assign]  # graphql-core's way to set a scalar's output
    query = schema.query_type
    assert query is not None
    query.fields["mlflowGetExperiment"].resolve = _resolve_experiment
    query.fields["mlflowGetRun"].resolve = _resolve_run
    return schema


def _camel(value: Any) -> Any:
    """MLflow's protobuf JSON (snake_case) as the GraphQL schema names it (camelCase); NaN as null."""
    if isinstance(value, dict):
        return {_camel_key(k): _camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel(v) for v in value]
    if value in ("NaN", "Infinity", "-Infinity") or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def _camel_key(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def _api_error(exc: TesseraError) -> dict[str, Any]:
    return {"apiError": {"code": exc.code, "message": exc.message}}


def _experiment_json(session: Session, access: Access, experiment_id: str | None) -> dict[str, Any]:
    experiment = experiments.get_experiment(session, access, experiment_id)
    return _camel(render.experiment(experiments.view(session, experiment)))


def _resolve_experiment(_root: Any, info: GraphQLResolveInfo, input: dict | None = None) -> dict[str, Any]:
    session, access = info.context
    try:
        return {"experiment": _experiment_json(session, access, (input or {}).get("experimentId"))}
    except TesseraError as exc:
        return _api_error(exc)


def _resolve_run(_root: Any, info: GraphQLResolveInfo, input: dict | None = None) -> dict[str, Any]:
    session, access = info.context
    run_id = (input or {}).get("runId") or (input or {}).get("runUuid")
    try:
        run = _camel(render.run(runs.get_run(session, access, run_id)))
        run["experiment"] = _experiment_json(session, access, run["info"]["experimentId"])
        run["modelVersions"] = [
            {"name": v.model_name, "version": str(v.version), "status": v.status.upper(), "runId": run_id}
            for v in lineage.model_versions_of_run(session, access, run_id)
        ]
        return {"run": run}
    except TesseraError as exc:
        return _api_error(exc)


_GRAPHQL_SCHEMA = _schema()


@pages.api_route("/graphql", methods=["GET", "POST"])
async def graphql_endpoint(request: Request, body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    """One query per request, as MLflow's server takes them (no batching)."""
    if request.method == "GET":
        body = dict(request.query_params)
    query = body.get("query")
    if not isinstance(query, str) or not query:
        raise InvalidParameter("A GraphQL request needs a 'query'")
    variables = body.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise InvalidParameter("GraphQL 'variables' must be an object")
    result = await run_in_threadpool(
        graphql_sync,
        _GRAPHQL_SCHEMA,
        query,
        variable_values=variables,
        operation_name=body.get("operationName"),
        context_value=(session, access),
    )
    return respond(result.formatted)


# --- artifacts below runs and logged models --------------------------------------------------------------


def _files(found: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    files = []
    for path, entry in found:
        item: dict[str, Any] = {"path": path, "is_dir": entry.is_dir}
        if entry.size is not None:
            item["file_size"] = entry.size
        files.append(item)
    return files


@api_v2.get("/artifacts/list")
def list_run_artifacts(query: QueryParams, session: SessionDep, access: AccessDep, settings: SettingsDep) -> Response:
    run = runs.get_run_row(session, access, query.get("run_id") or query.get("run_uuid"))
    found = artifacts.list_below(session, access, get_artifact_store(settings), run.artifact_uri, query.get("path"))
    return respond({"root_uri": run.artifact_uri, "files": _files(found)})


@pages.get("/get-artifact")
def get_run_artifact(query: QueryParams, session: SessionDep, access: AccessDep, settings: SettingsDep) -> Response:
    run = runs.get_run_row(session, access, query.get("run_id") or query.get("run_uuid"))
    path = str(query.get("path") or "")
    store = get_artifact_store(settings)
    return artifact_download(store.read(artifacts.file_below(session, access, store, run.artifact_uri, path)), path)


def _logged_model_root(session: Session, access: Access, model_id: str) -> str:
    return logged_models.get_logged_model(session, access, model_id).model.artifact_location


@api_v2.get("/logged-models/{model_id}/artifacts/directories")
def list_logged_model_artifacts(
    model_id: str, query: QueryParams, session: SessionDep, access: AccessDep, settings: SettingsDep
) -> Response:
    root = _logged_model_root(session, access, model_id)
    path = query.get("artifact_directory_path")
    found = artifacts.list_below(session, access, get_artifact_store(settings), root, path)
    return respond({"root_uri": root, "files": _files(found)})


@api_v2.get("/logged-models/{model_id}/artifacts/files")
def get_logged_model_artifact(
    model_id: str, query: QueryParams, session: SessionDep, access: AccessDep, settings: SettingsDep
) -> Response:
    root = _logged_model_root(session, access, model_id)
    path = str(query.get("artifact_file_path") or "")
    store = get_artifact_store(settings)
    return artifact_download(store.read(artifacts.file_below(session, access, store, root, path)), path)


# --- features Tessera does not offer: MLflow's answers when there is nothing there ---------------------


def _check_experiment(session: Session, access: Access, experiment_id: Any) -> None:
    """Another organization's experiment is missing here too, even for an empty answer."""
    if experiment_id:
        experiments.get_experiment(session, access, str(experiment_id))


@api_v2.post("/experiments/search-datasets")
def search_datasets_of_experiments(_principal: PrincipalDep) -> Response:
    # Evaluation datasets of runs are listed on the run page (run inputs); this view is for GenAI ones.
    return respond()


@api_v2.api_route("/gateway-proxy", methods=["GET", "POST"])
def gateway_proxy(_principal: PrincipalDep) -> Response:
    return respond({"endpoints": []})


@api_v3.get("/assistant/config")
def assistant_config(_principal: PrincipalDep) -> Response:
    return respond({"providers": {}, "projects": {}, "remote_access_allowed": False})


@api_v3.get("/assistant/providers")
def assistant_providers(_principal: PrincipalDep) -> Response:
    return respond({"providers": []})


@api_v3.post("/traces/search")
def search_traces(_principal: PrincipalDep) -> Response:
    return respond()


@api_v3.post("/traces/metrics")
def query_trace_metrics(_principal: PrincipalDep) -> Response:
    return respond({"data_points": []})


@api_v3.post("/datasets/search")
def search_evaluation_datasets(_principal: PrincipalDep) -> Response:
    return respond()


@api_v3.get("/scorers/list")
def list_scorers(query: QueryParams, session: SessionDep, access: AccessDep) -> Response:
    _check_experiment(session, access, query.get("experiment_id"))
    return respond()


@api_v3.get("/label-schemas/list")
def list_label_schemas(query: QueryParams, session: SessionDep, access: AccessDep) -> Response:
    _check_experiment(session, access, query.get("experiment_id"))
    return respond({"label_schemas": [], "next_page_token": ""})


@api_v3.get("/review-queues/list")
def list_review_queues(query: QueryParams, session: SessionDep, access: AccessDep) -> Response:
    _check_experiment(session, access, query.get("experiment_id"))
    return respond({"next_page_token": ""})


@api_v3.get("/gateway/endpoints/list")
def list_gateway_endpoints(_principal: PrincipalDep) -> Response:
    return respond()


@api_v3.get("/gateway/endpoints/bindings/list")
def list_gateway_bindings(_principal: PrincipalDep) -> Response:
    return respond()


@api_v3.get("/gateway/secrets/list")
def list_gateway_secrets(_principal: PrincipalDep) -> Response:
    return respond()


@api_v3.get("/gateway/secrets/config")
def gateway_secrets_config(_principal: PrincipalDep) -> Response:
    return respond({"secrets_available": False, "using_default_passphrase": False})


@api_v3.get("/mcp-servers")
def list_mcp_servers(_principal: PrincipalDep) -> Response:
    return respond({"mcp_servers": [], "next_page_token": None})


@api_v3.get("/ui-telemetry")
def ui_telemetry_config() -> Response:
    # The UI asks before sending usage events; Tessera collects none.
    return respond({"disable_ui_events": [], "disable_ui_telemetry": True, "ui_rollout_percentage": 0})


@api_v3.post("/ui-telemetry")
def ui_telemetry_events(_body: JsonBody) -> Response:
    return respond({"status": "success"})
