"""The search page's plan does not depend on fresh statistics: over an experiment just filled (in the test's
transaction, where autovacuum cannot have analyzed it), a page read in an index's order looks at the runs
it walks, not at every run of the experiment for each of them."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect

from services.tracking.domain import search
from shared.db.models import Experiment

RUNS = 2_000


def _copy(cursor, table: str, columns: str, rows) -> None:
    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _rows_read(plan: dict) -> dict[str, int]:
    """Rows each table's scans returned, over all their loops, plus the rows join filters removed."""
    totals: dict[str, int] = {}
    loops = plan.get("Actual Loops", 1)
    if "Relation Name" in plan:
        name = plan["Relation Name"]
        totals[name] = totals.get(name, 0) + plan["Actual Rows"] * loops + plan.get("Rows Removed by Filter", 0)
    if "Rows Removed by Join Filter" in plan:
        totals["join filter"] = totals.get("join filter", 0) + plan["Rows Removed by Join Filter"]
    for child in plan.get("Plans", []):
        for name, rows in _rows_read(child).items():
            totals[name] = totals.get(name, 0) + rows
    return totals


@pytest.fixture
def filled(db_session, tenant) -> uuid.UUID:
    """An experiment of RUNS runs written with COPY (as a bulk load would), metrics acc and loss, param lr."""
    experiment = Experiment(project_id=tenant.project_id, name=f"plans-{uuid.uuid4().hex[:8]}")
    db_session.add(experiment)
    db_session.flush()
    runs = [
        (uuid.uuid4(), (i * 7919 % RUNS) / RUNS, ("0.1", "0.01", "0.001", "0.0001", "1e-05")[i % 5])
        for i in range(RUNS)
    ]
    now = datetime.now(UTC)
    driver = db_session.connection().connection.driver_connection
    with driver.cursor() as cursor:
        _copy(
            cursor,
            "experiment_runs",
            "id, experiment_id, name, status, start_time, artifact_uri, created_at, updated_at",
            ((run_id, experiment.id, f"run-{i}", "FINISHED", i, "", now, now) for i, (run_id, _, _) in enumerate(runs)),
        )
        for key in ("acc", "loss"):
            _copy(
                cursor,
                "run_latest_metrics",
                "run_id, key, value, is_nan, step, timestamp",
                ((run_id, key, acc, False, 0, 0) for run_id, acc, _ in runs),
            )
        _copy(cursor, "run_params", "run_id, key, value", ((run_id, "lr", lr) for run_id, _, lr in runs))
    return experiment.id


@pytest.mark.parametrize(
    ("filter_string", "order_by"),
    [
        ("metrics.acc > 0.9 AND params.lr = '0.01'", ("metrics.acc DESC",)),
        ("params.lr = '0.01'", ()),
    ],
)
def test_a_page_over_a_freshly_filled_experiment_reads_only_the_runs_it_walks(
    db_session, filled, filter_string, order_by
):
    statement = search.page_statement(psycopg_dialect(), filter_string, order_by, "ACTIVE_ONLY", 1)
    assert statement.no_sort
    driver = db_session.connection().connection.driver_connection
    with driver.cursor() as cursor:
        cursor.execute("SET LOCAL enable_sort = off")
        params = statement.page_params([filled], 0, 100)
        texts = [row[0] for row in cursor.execute(statement.sql, params)]
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement.sql, params)
        plan = cursor.fetchone()[0][0]["Plan"]
    assert len(texts) == 101 if not order_by else 0 < len(texts) <= 101
    for run in map(json.loads, texts):
        assert {p["key"]: p["value"] for p in run["data"]["params"]}["lr"] == "0.01"
    # 200 matching runs walked of 2,000 (or the first 505 for the default order): each run, its metric
    # and its param read a few times at most; the whole experiment read per row would be millions.
    read = _rows_read(plan)
    assert sum(read.values()) < 6 * 505, read
