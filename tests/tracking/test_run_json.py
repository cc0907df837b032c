"""Runs rendered by PostgreSQL (services/tracking/domain/run_json.py) are exactly what api/render.py makes of
the same runs on SQLite: every field, NaN and infinities, optional fields, dataset inputs, model links."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import select

from services.tracking.api import render
from services.tracking.domain import runs
from shared.db.models import ExperimentRun, RunLatestMetric

API = "/api/2.0/mlflow"


def _post(client, headers, path: str, body: dict) -> dict:
    response = client.post(f"{API}/{path}", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _normalized(run: dict) -> dict:
    """Lists of children in a fixed order (MLflow's order within them is unspecified)."""

    def ordered(items: list) -> list:
        return sorted(items, key=repr)

    data, inputs = run["data"], run["inputs"]
    return {
        **run,
        "data": {name: ordered(items) for name, items in data.items()},
        "inputs": {
            "dataset_inputs": ordered(
                [{**d, "tags": ordered(d["tags"])} for d in inputs["dataset_inputs"]],
            ),
            "model_inputs": ordered(inputs["model_inputs"]),
        },
        "outputs": {"model_outputs": ordered(run["outputs"]["model_outputs"])},
    }


def _rendered_in_python(db_session, run_ids: list[str]) -> dict[str, dict]:
    rows = db_session.execute(
        select(ExperimentRun.__table__).where(ExperimentRun.id.in_([uuid.UUID(r) for r in run_ids]))
    ).all()
    return {view.run.id.hex: _normalized(render.run(view)) for view in runs.load_views(db_session, rows)}


def test_runs_rendered_by_postgresql_equal_the_python_rendering(client, db_session, tenant):
    headers = tenant.headers
    experiment_id = _post(client, headers, "experiments/create", {"name": f"json-{uuid.uuid4().hex[:8]}"})[
        "experiment_id"
    ]
    full = _post(client, headers, "runs/create", {"experiment_id": experiment_id, "run_name": "full"})["run"]
    bare = _post(client, headers, "runs/create", {"experiment_id": experiment_id})["run"]
    gone = _post(client, headers, "runs/create", {"experiment_id": experiment_id, "run_name": "gone"})["run"]
    full_id, bare_id, gone_id = (r["info"]["run_id"] for r in (full, bare, gone))
    metrics = [
        {"key": key, "value": value, "timestamp": 1_700_000_000_000, "step": 3}
        for key, value in (("acc", 0.1), ("big", 1e300), ("nan", "NaN"), ("inf", "Infinity"), ("ninf", "-Infinity"))
    ]
    _post(
        client,
        headers,
        "runs/log-batch",
        {
            "run_id": full_id,
            "metrics": metrics,
            "params": [{"key": "lr", "value": "0.01"}, {"key": "quote", "value": 'a "b" \\ c\n'}],
            "tags": [{"key": "note", "value": "é ☃"}],
        },
    )
    dataset = {"name": "train", "digest": "abc", "source_type": "local", "source": "/data", "schema": '{"a": 1}'}
    model = _post(client, headers, "logged-models", {"experiment_id": experiment_id, "source_run_id": full_id})
    model_id = model["model"]["info"]["model_id"]
    _post(
        client,
        headers,
        "runs/log-inputs",
        {
            "run_id": full_id,
            "datasets": [{"dataset": dataset, "tags": [{"key": "mlflow.data.context", "value": "training"}]}],
            "models": [{"model_id": model_id}],
        },
    )
    _post(client, headers, "runs/outputs", {"run_id": full_id, "models": [{"model_id": model_id, "step": 7}]})
    _post(client, headers, "runs/update", {"run_id": full_id, "status": "FINISHED", "end_time": 1_700_000_000_500})
    _post(client, headers, "runs/delete", {"run_id": gone_id})

    found = _post(
        client, headers, "runs/search", {"experiment_ids": [experiment_id], "run_view_type": "ALL", "max_results": 2}
    )
    token = found["next_page_token"]
    rest = _post(
        client, headers, "runs/search", {"experiment_ids": [experiment_id], "run_view_type": "ALL", "page_token": token}
    )
    assert "next_page_token" not in rest
    searched = {r["info"]["run_id"]: _normalized(r) for r in found["runs"] + rest["runs"]}

    experiments_of_metrics = db_session.scalars(
        select(RunLatestMetric.experiment_id).where(RunLatestMetric.run_id == uuid.UUID(full_id))
    ).all()
    assert experiments_of_metrics == [uuid.UUID(experiment_id)] * len(metrics)

    expected = _rendered_in_python(db_session, [full_id, bare_id, gone_id])
    assert searched == expected
    assert searched[full_id]["inputs"]["dataset_inputs"][0]["dataset"]["schema"] == '{"a": 1}'
    assert searched[gone_id]["info"]["lifecycle_stage"] == "deleted"
    assert "end_time" not in searched[bare_id]["info"]
    for run_id in (full_id, bare_id):
        got = client.get(f"{API}/runs/get", params={"run_id": run_id}, headers=headers)
        assert _normalized(got.json()["run"]) == expected[run_id]


def test_experiments_rendered_by_postgresql_equal_the_python_rendering(db_session, tenant):
    """Every field, tags (quotes, unicode, none), a deleted experiment, no artifact location, and timestamps
    at every microsecond offset of a millisecond window, where `int(t.timestamp() * 1000)` rounds."""
    from datetime import UTC, datetime, timedelta

    from services.tracking.domain import experiments
    from services.tracking.domain.experiment_json import experiment_json
    from shared.db.models import Experiment, ExperimentTag

    base = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    made = []
    for i in range(400):
        moment = base + timedelta(microseconds=i * 2_503 + (i % 7))
        experiment = Experiment(
            project_id=tenant.project_id,
            name=f"render-{uuid.uuid4().hex[:8]}",
            artifact_location=None if i == 1 else f"mlflow-artifacts:/{i}",
            created_at=moment,
            updated_at=moment + timedelta(microseconds=999_999 * i),
            deleted_at=moment if i % 3 == 0 else None,
        )
        db_session.add(experiment)
        made.append(experiment)
    db_session.flush()
    db_session.add_all(
        [
            ExperimentTag(experiment_id=made[0].id, key="quote", value='a "b" \\ c\n'),
            ExperimentTag(experiment_id=made[0].id, key="note", value="é ☃"),
            ExperimentTag(experiment_id=made[2].id, key="team", value="x"),
        ]
    )
    db_session.flush()
    ids = [e.id for e in made]
    in_database = dict(db_session.execute(select(Experiment.id, experiment_json()).where(Experiment.id.in_(ids))).all())
    tags = experiments.experiment_tags(db_session, ids)
    for experiment in made:
        python = render.experiment(experiments.ExperimentView(experiment, tags[experiment.id]))
        database = json.loads(in_database[experiment.id])
        assert list(database) == list(python)
        assert {**database, "tags": sorted(database["tags"], key=repr)} == {
            **python,
            "tags": sorted(python["tags"], key=repr),
        }
