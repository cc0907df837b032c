"""MLflow tracking REST API (experiments, runs, metrics, search, logged models, inputs/outputs).

Served under /api/2.0/mlflow and its /ajax-api/2.0/mlflow alias. Handlers parse the protobuf-JSON
body, call the domain and render protobuf JSON; errors carry MLflow's error codes so the mlflow client
raises the MlflowException it would raise against MLflow's own server.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from services.tracking.api import hot_reads, hot_writes, render, wire
from services.tracking.api.common import (
    JsonBody,
    QueryParams,
    as_list,
    key_value_pairs,
    respond,
    respond_page,
    respond_rendered,
    run_id_of,
)
from services.tracking.domain import experiments, logged_models, metrics, run_json, runs, search
from shared.core.auth import Access
from shared.core.deps import AccessDep, SessionDep, SettingsDep
from shared.core.hot_routes import HotRoute, hot_pool_lifespan

router = APIRouter(tags=["mlflow-tracking"])
# A training loop's write calls and the most frequent reads: served first by hot_writes and hot_reads,
# these endpoints answer what they leave (see shared.core.hot_routes); mounted before every other route.
hot_router = APIRouter(tags=["mlflow-tracking"], lifespan=hot_pool_lifespan)


# --- experiments -------------------------------------------------------------------------------------


@router.post("/experiments/create", openapi_extra=wire.body(wire.CreateExperiment))
def create_experiment(body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    experiment = experiments.create_experiment(
        session,
        access,
        body.get("name"),
        body.get("artifact_location") or None,
        key_value_pairs(body.get("tags"), "tags"),
    )
    return respond({"experiment_id": experiment.id.hex})


def get_experiment(query: QueryParams, session: SessionDep, access: AccessDep) -> Response:
    experiment = experiments.get_experiment(session, access, query.get("experiment_id"))
    return respond({"experiment": render.experiment(experiments.view(session, experiment))})


def get_experiment_by_name(query: QueryParams, session: SessionDep, access: AccessDep) -> Response:
    experiment = experiments.get_experiment_by_name(session, access, query.get("experiment_name"))
    return respond({"experiment": render.experiment(experiments.view(session, experiment))})


def _search_experiments(params: dict, session: Session, access: Access) -> Response:
    found, next_token = experiments.search_experiments(
        session,
        access,
        filter_string=params.get("filter"),
        order_by=as_list(params.get("order_by"), "order_by"),
        max_results=params.get("max_results"),
        page_token=params.get("page_token"),
        view_type=params.get("view_type"),
    )
    return respond_page("experiments", [render.experiment(v) for v in found], next_token)


def search_experiments(body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    return _search_experiments(body, session, access)


def search_experiments_get(query: QueryParams, session: SessionDep, access: AccessDep) -> Response:
    return _search_experiments(query, session, access)


for _read_path, _read, _method, _openapi, _hot_read in (
    ("/experiments/get", get_experiment, "GET", wire.query(wire.ExperimentRef), hot_reads.get_experiment),
    (
        "/experiments/get-by-name",
        get_experiment_by_name,
        "GET",
        wire.query(wire.ExperimentByName),
        hot_reads.get_experiment_by_name,
    ),
    (
        "/experiments/search",
        search_experiments,
        "POST",
        wire.body(wire.SearchExperiments),
        hot_reads.search_experiments,
    ),
    (
        "/experiments/search",
        search_experiments_get,
        "GET",
        wire.query(wire.SearchExperiments),
        hot_reads.search_experiments,
    ),
):
    hot_router.add_api_route(
        _read_path, _read, methods=[_method], openapi_extra=_openapi, route_class_override=HotRoute.serving(_hot_read)
    )


@router.post("/experiments/update", openapi_extra=wire.body(wire.RenameExperiment))
def update_experiment(body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    experiments.rename_experiment(session, access, body.get("experiment_id"), body.get("new_name"))
    return respond()


@router.post("/experiments/delete", openapi_extra=wire.body(wire.ExperimentRef))
def delete_experiment(body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    experiments.delete_experiment(session, access, body.get("experiment_id"))
    return respond()


@router.post("/experiments/restore", openapi_extra=wire.body(wire.ExperimentRef))
def restore_experiment(body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    experiments.restore_experiment(session, access, body.get("experiment_id"))
    return respond()


@router.post("/experiments/set-experiment-tag", openapi_extra=wire.body(wire.SetExperimentTag))
def set_experiment_tag(body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    experiments.set_experiment_tag(session, access, body.get("experiment_id"), body.get("key"), body.get("value"))
    return respond()


@router.post("/experiments/delete-experiment-tag", openapi_extra=wire.body(wire.DeleteExperimentTag))
def delete_experiment_tag(body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    experiments.delete_experiment_tag(session, access, body.get("experiment_id"), body.get("key"))
    return respond()


# --- runs ----------------------------------------------------------------------------------------------


def create_run(body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    view = runs.create_run(
        session,
        access,
        experiment_id=body.get("experiment_id"),
        user_id=body.get("user_id"),
        run_name=body.get("run_name"),
        start_time=body.get("start_time"),
        tags=key_value_pairs(body.get("tags"), "tags"),
    )
    return respond({"run": render.run(view)})


def get_run(query: QueryParams, session: SessionDep, access: AccessDep) -> Response:
    if run_json.in_database(session):
        return respond_rendered("run", runs.get_run_json(session, access, run_id_of(query)))
    return respond({"run": render.run(runs.get_run(session, access, run_id_of(query)))})


def update_run(body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    run = runs.update_run(
        session,
        access,
        run_id_of(body),
        status=body.get("status"),
        end_time=body.get("end_time"),
        run_name=body.get("run_name"),
    )
    return respond({"run_info": render.run_info(run)})


@router.post("/runs/delete", openapi_extra=wire.body(wire.RunRef))
def delete_run(body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    runs.delete_run(session, access, run_id_of(body))
    return respond()


@router.post("/runs/restore", openapi_extra=wire.body(wire.RunRef))
def restore_run(body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    runs.restore_run(session, access, run_id_of(body))
    return respond()


def set_tag(body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    runs.set_tag(session, access, run_id_of(body), body.get("key"), body.get("value"))
    return respond()


@router.post("/runs/delete-tag", openapi_extra=wire.body(wire.DeleteRunTag))
def delete_tag(body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    runs.delete_tag(session, access, run_id_of(body), body.get("key"))
    return respond()


def log_parameter(body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    runs.log_param(session, access, run_id_of(body), body.get("key"), body.get("value"))
    return respond()


def log_metric(body: JsonBody, session: SessionDep, access: AccessDep, settings: SettingsDep) -> Response:
    if settings.tracking_async_metric_commit:
        metrics.commit_without_wal_flush(session)
    metrics.log_metric(session, access, run_id_of(body), body)
    return respond()


def log_batch(body: JsonBody, session: SessionDep, access: AccessDep, settings: SettingsDep) -> Response:
    if settings.tracking_async_metric_commit:
        metrics.commit_without_wal_flush(session)
    metrics.log_batch(
        session,
        access,
        run_id_of(body),
        as_list(body.get("metrics"), "metrics"),
        as_list(body.get("params"), "params"),
        as_list(body.get("tags"), "tags"),
    )
    return respond()


for _path, _endpoint, _wire, _hot in (
    ("/runs/create", create_run, wire.CreateRun, hot_writes.create_run),
    ("/runs/update", update_run, wire.UpdateRun, hot_writes.update_run),
    ("/runs/set-tag", set_tag, wire.SetRunTag, hot_writes.set_tag),
    ("/runs/log-parameter", log_parameter, wire.LogParam, hot_writes.log_param),
    ("/runs/log-metric", log_metric, wire.LogMetric, hot_writes.log_metric),
    ("/runs/log-batch", log_batch, wire.LogBatch, hot_writes.log_batch),
):
    hot_router.add_api_route(
        _path,
        _endpoint,
        methods=["POST"],
        openapi_extra=wire.body(_wire),
        route_class_override=HotRoute.serving(_hot),
    )


@router.post("/runs/log-inputs", openapi_extra=wire.body(wire.LogInputs))
def log_inputs(body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    logged_models.log_inputs(
        session,
        access,
        run_id_of(body),
        as_list(body.get("datasets"), "datasets"),
        as_list(body.get("models"), "models"),
    )
    return respond()


@router.post("/runs/outputs", openapi_extra=wire.body(wire.LogOutputs))
def log_outputs(body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    logged_models.log_outputs(session, access, run_id_of(body), as_list(body.get("models"), "models"))
    return respond()


def search_runs(body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    request: dict[str, Any] = {
        "experiment_ids": [str(e) for e in as_list(body.get("experiment_ids"), "experiment_ids")],
        "filter_string": body.get("filter"),
        "run_view_type": body.get("run_view_type"),
        "max_results": body.get("max_results"),
        "order_by": as_list(body.get("order_by"), "order_by"),
        "page_token": body.get("page_token"),
    }
    if run_json.in_database(session):
        page, next_token = search.search_runs_json(session, access, **request)
        return respond_rendered("runs", page, next_token)
    found, next_token = search.search_runs(session, access, **request)
    return respond_page("runs", [render.run(view) for view in found], next_token)


hot_router.add_api_route(
    "/runs/get",
    get_run,
    methods=["GET"],
    openapi_extra=wire.query(wire.RunRef),
    route_class_override=HotRoute.serving(hot_reads.get_run),
)
hot_router.add_api_route(
    "/runs/search",
    search_runs,
    methods=["POST"],
    openapi_extra=wire.body(wire.SearchRuns),
    route_class_override=HotRoute.serving(hot_reads.search_runs),
)


# --- metric history -----------------------------------------------------------------------------------


@router.get("/metrics/get-history", openapi_extra=wire.query(wire.MetricHistory))
def get_metric_history(query: QueryParams, session: SessionDep, access: AccessDep) -> Response:
    key = query.get("metric_key")
    rows, next_token = metrics.get_metric_history(
        session,
        access,
        run_id_of(query),
        key,
        max_results=query.get("max_results"),
        page_token=query.get("page_token"),
    )
    return respond_page("metrics", render.history_points(key, rows), next_token)


@router.get("/metrics/get-history-bulk-interval", openapi_extra=wire.query(wire.MetricHistoryBulkInterval))
def get_metric_history_bulk_interval(query: QueryParams, session: SessionDep, access: AccessDep) -> Response:
    key = query.get("metric_key")
    per_run = metrics.get_metric_history_bulk_interval(
        session,
        access,
        as_list(query.get("run_ids"), "run_ids"),
        key,
        start_step=query.get("start_step"),
        end_step=query.get("end_step"),
        max_results=query.get("max_results"),
    )
    points = [
        {**render.history_point(key, r[0], r[1], r[2], r[3]), "run_id": run_id}
        for run_id, rows in per_run
        for r in rows
    ]
    return respond({"metrics": points})


# --- logged models -------------------------------------------------------------------------------------


@router.post("/logged-models", openapi_extra=wire.body(wire.CreateLoggedModel))
def create_logged_model(body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    view = logged_models.create_logged_model(
        session,
        access,
        experiment_id=body.get("experiment_id"),
        name=body.get("name"),
        model_type=body.get("model_type"),
        source_run_id=body.get("source_run_id"),
        params=as_list(body.get("params"), "params"),
        tags=as_list(body.get("tags"), "tags"),
    )
    return respond({"model": render.logged_model(view)})


@router.post("/logged-models/search", openapi_extra=wire.body(wire.SearchLoggedModels))
def search_logged_models(body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    found, next_token = logged_models.search_logged_models(
        session,
        access,
        experiment_ids=[str(e) for e in as_list(body.get("experiment_ids"), "experiment_ids")],
        filter_string=body.get("filter"),
        order_by=as_list(body.get("order_by"), "order_by"),
        max_results=body.get("max_results"),
        page_token=body.get("page_token"),
    )
    return respond_page("models", [render.logged_model(v) for v in found], next_token)


@router.get("/logged-models/{model_id}")
def get_logged_model(model_id: str, query: QueryParams, session: SessionDep, access: AccessDep) -> Response:
    allow_deleted = str(query.get("allow_deleted", "")).lower() == "true"
    view = logged_models.get_logged_model(session, access, model_id, allow_deleted=allow_deleted)
    return respond({"model": render.logged_model(view)})


@router.patch("/logged-models/{model_id}", openapi_extra=wire.body(wire.FinalizeLoggedModel))
def finalize_logged_model(model_id: str, body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    view = logged_models.finalize_logged_model(session, access, model_id, body.get("status"))
    return respond({"model": render.logged_model(view)})


@router.delete("/logged-models/{model_id}")
def delete_logged_model(model_id: str, session: SessionDep, access: AccessDep) -> Response:
    logged_models.delete_logged_model(session, access, model_id)
    return respond()


@router.patch("/logged-models/{model_id}/tags", openapi_extra=wire.body(wire.LoggedModelTags))
def set_logged_model_tags(model_id: str, body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    view = logged_models.set_logged_model_tags(session, access, model_id, as_list(body.get("tags"), "tags"))
    return respond({"model": render.logged_model(view)})


@router.delete("/logged-models/{model_id}/tags/{key:path}")
def delete_logged_model_tag(model_id: str, key: str, session: SessionDep, access: AccessDep) -> Response:
    logged_models.delete_logged_model_tag(session, access, model_id, key)
    return respond()


@router.post("/logged-models/{model_id}/params", openapi_extra=wire.body(wire.LoggedModelParams))
def log_logged_model_params(model_id: str, body: JsonBody, session: SessionDep, access: AccessDep) -> Response:
    logged_models.log_logged_model_params(session, access, model_id, as_list(body.get("params"), "params"))
    return respond()
