"""Compile parsed search filters and order-by keys into SQLAlchemy Core for runs, experiments and
logged models. Nothing is ever filtered in Python: every comparison becomes SQL.

Child key/value data (params, tags, latest metrics, datasets) is tested with correlated EXISTS: a run
matches `params.lr = '0.1'` if it has a param `lr` whose value is '0.1' (so `!=` never matches runs
that lack the key, as in MLflow). Sorting by a child value uses one outer join per sort key.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, SQLColumnExpression, and_, exists, literal_column, or_, select, true
from sqlalchemy.orm import InstrumentedAttribute, aliased

from services.tracking.domain.search_grammar import And, Comparison, Node, Or, OrderKey
from shared.core.errors import InvalidParameter
from shared.db.models import (
    Dataset,
    Experiment,
    ExperimentRun,
    ExperimentTag,
    LoggedModel,
    LoggedModelMetric,
    LoggedModelParam,
    LoggedModelTag,
    RunDatasetInput,
    RunLatestMetric,
    RunParam,
    RunTag,
)

STRING_OPS = frozenset({"=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"})
NUMBER_OPS = frozenset({"=", "!=", "<", "<=", ">", ">=", "IN", "NOT IN"})
ID_OPS = frozenset({"=", "!=", "IN", "NOT IN"})
_NEVER_AN_ID = uuid.UUID(int=0)
# A child table of (owner, key, value) rows: a run's or a logged model's tags, params and metrics.
_KeyValueModel = (
    type[RunLatestMetric]
    | type[RunParam]
    | type[RunTag]
    | type[ExperimentTag]
    | type[LoggedModelTag]
    | type[LoggedModelParam]
    | type[LoggedModelMetric]
)


def _values(cmp: Comparison) -> tuple[Any, ...]:
    return cmp.value if isinstance(cmp.value, tuple) else (cmp.value,)


def _check(cmp: Comparison, kind: str, ops: frozenset[str]) -> None:
    """Operators and operand types a key accepts, with an error naming the offending part."""
    name = f"{cmp.entity}.{cmp.key}" if cmp.entity != "attributes" else cmp.key
    if cmp.op not in ops:
        raise InvalidParameter(f"Invalid comparator '{cmp.op}' for '{name}'; expected one of {', '.join(sorted(ops))}")
    expected = float if kind == "number" else str
    for value in _values(cmp):
        if not isinstance(value, expected):
            what = "a number" if kind == "number" else "a quoted string"
            raise InvalidParameter(f"Invalid value {value!r} for '{name}': expected {what}")


def _compare(column: SQLColumnExpression[Any], op: str, value: Any) -> ColumnElement[bool]:
    if op == "=":
        return column == value
    if op == "!=":
        return column != value
    if op == "<":
        return column < value
    if op == "<=":
        return column <= value
    if op == ">":
        return column > value
    if op == ">=":
        return column >= value
    if op == "LIKE":
        return column.like(value)
    if op == "ILIKE":
        return column.ilike(value)
    if op == "IN":
        return column.in_(value)
    if op == "NOT IN":
        return column.not_in(value)
    raise InvalidParameter(f"Invalid comparator '{op}'")


def _as_uuid(value: str, prefix: str = "") -> uuid.UUID:
    # An id that is not even well-formed names nothing: it can match no row.
    try:
        return uuid.UUID(value.removeprefix(prefix))
    except ValueError:
        return _NEVER_AN_ID


def _compare_id(
    column: SQLColumnExpression[uuid.UUID | None], cmp: Comparison, prefix: str = ""
) -> ColumnElement[bool]:
    _check(cmp, "string", ID_OPS)
    ids = tuple(_as_uuid(v, prefix) for v in _values(cmp))
    return _compare(column, cmp.op, ids if cmp.op in ("IN", "NOT IN") else ids[0])


def _kv_exists(
    model: _KeyValueModel,
    owner_column: SQLColumnExpression[uuid.UUID],
    owner_id: Any,
    cmp: Comparison,
    kind: str,
    probe: bool = False,
) -> ColumnElement[bool]:
    """Owner has child key `cmp.key` (whose value satisfies the comparison). With `probe`, the test is
    looked up once per owner row (see _probe)."""
    has_key = and_(owner_column == owner_id, model.key == cmp.key)
    if cmp.op in ("IS NULL", "IS NOT NULL"):
        found = _probe(select(literal_column("1")).where(has_key), probe)
        return ~found if cmp.op == "IS NULL" else found
    _check(cmp, kind, NUMBER_OPS if kind == "number" else STRING_OPS)
    return _probe(select(literal_column("1")).where(has_key, _compare(model.value, cmp.op, cmp.value)), probe)


def _probe(query: Select[Any], probe: bool) -> ColumnElement[bool]:
    """EXISTS of `query`. With `probe`, `OFFSET 0` keeps PostgreSQL from turning it into a join: it stays
    a lookup by the owner's key for each row that reaches it. A page read in an index's order stops after
    a few rows, and a join planned on fresh statistics (an experiment just filled is estimated at a row
    or two) was a nested loop re-reading the whole child table for each row: 47 ms for 1,000 runs."""
    return exists(query.offset(0) if probe else query)


def compile_filter(
    node: Node | None, compile_comparison: Callable[[Comparison], ColumnElement[bool]]
) -> ColumnElement[bool]:
    if node is None:
        return true()
    if isinstance(node, And):
        return and_(*(compile_filter(item, compile_comparison) for item in node.items))
    if isinstance(node, Or):
        return or_(*(compile_filter(item, compile_comparison) for item in node.items))
    return compile_comparison(node)


# --- runs ------------------------------------------------------------------------------------------

_RUN_STRING_ATTRIBUTES = {
    "run_name": ExperimentRun.name,
    "status": ExperimentRun.status,
    "user_id": ExperimentRun.user_name,
    "artifact_uri": ExperimentRun.artifact_uri,
}
_RUN_NUMBER_ATTRIBUTES = {
    "start_time": ExperimentRun.start_time,
    "end_time": ExperimentRun.end_time,
    "created": ExperimentRun.start_time,
    "Created": ExperimentRun.start_time,
}
_DATASET_COLUMNS = {
    "name": Dataset.name,
    "digest": Dataset.digest,
    "context": RunDatasetInput.tags["mlflow.data.context"].as_string(),
}


def run_comparison(cmp: Comparison, probe: bool = False) -> ColumnElement[bool]:
    """One comparison of a run filter; `probe` as in _kv_exists."""
    if cmp.entity == "metrics":
        return _kv_exists(RunLatestMetric, RunLatestMetric.run_id, ExperimentRun.id, cmp, "number", probe)
    if cmp.entity == "params":
        return _kv_exists(RunParam, RunParam.run_id, ExperimentRun.id, cmp, "string", probe)
    if cmp.entity == "tags":
        return _kv_exists(RunTag, RunTag.run_id, ExperimentRun.id, cmp, "string", probe)
    if cmp.entity == "datasets":
        column = _DATASET_COLUMNS.get(cmp.key)
        if column is None:
            raise InvalidParameter(
                f"Invalid dataset attribute '{cmp.key}'; expected one of {', '.join(_DATASET_COLUMNS)}"
            )
        _check(cmp, "string", STRING_OPS)
        query: Select[Any] = select(literal_column("1")).where(
            RunDatasetInput.run_id == ExperimentRun.id,
            Dataset.id == RunDatasetInput.dataset_id,
            _compare(column, cmp.op, cmp.value),
        )
        return _probe(query, probe)
    key = cmp.key
    if key in ("run_id", "run_uuid", "id"):
        return _compare_id(ExperimentRun.id, cmp)
    if key in _RUN_STRING_ATTRIBUTES:
        _check(cmp, "string", STRING_OPS)
        return _compare(_RUN_STRING_ATTRIBUTES[key], cmp.op, cmp.value)
    if key in _RUN_NUMBER_ATTRIBUTES:
        _check(cmp, "number", NUMBER_OPS)
        values = tuple(int(v) for v in _values(cmp))
        return _compare(_RUN_NUMBER_ATTRIBUTES[key], cmp.op, values if cmp.op in ("IN", "NOT IN") else values[0])
    raise InvalidParameter(
        f"Invalid attribute key '{key}' specified. Valid keys are "
        f"{sorted(['run_id', *_RUN_STRING_ATTRIBUTES, *_RUN_NUMBER_ATTRIBUTES])}"
    )


@dataclass
class CompiledRunSearch:
    """WHERE condition, joins (target, on-clause, outer?) and ORDER BY of a run search.

    `order` is (expression, ascending) pairs; an index of the experiment returns rows already in the
    order of the first `indexed` of them (see search.py, which makes PostgreSQL read them that way).
    `experiment` is the column the search's experiments are matched on: the run's, or the experiment of
    the metric the page is ordered by (the same, kept by a trigger), whose index then yields the page."""

    condition: ColumnElement[bool]
    joins: list[tuple]
    order: list[tuple[OrderColumn, bool]]
    indexed: int
    experiment: SQLColumnExpression[uuid.UUID | None]

    @property
    def clauses(self) -> list:
        return [expression.asc() if ascending else expression.desc() for expression, ascending in self.order]


_RUN_ORDER_ATTRIBUTES = {
    **_RUN_STRING_ATTRIBUTES,
    **_RUN_NUMBER_ATTRIBUTES,
    "run_id": ExperimentRun.id,
}
# Columns create_run always fills: ordering by them needs no "missing last" key (which would keep
# PostgreSQL from reading the order off an index).
_NEVER_NULL_ATTRIBUTES = frozenset({"start_time", "created", "Created", "run_id", "status", "run_name"})
_START_TIME_KEYS = frozenset({"start_time", "created", "Created"})
# A column a run search orders by: an expression, or a mapped (possibly aliased) attribute.
OrderColumn = ColumnElement[Any] | InstrumentedAttribute[Any]
# Any: aliased per search, and only the metrics table carries experiment_id (read where it is joined).
_KV_MODELS: dict[str, Any] = {
    "metrics": RunLatestMetric,
    "params": RunParam,
    "tags": RunTag,
}


def _required_metric_terms(node: Node | None) -> dict[str, list[Comparison]]:
    """Metric comparisons in the filter's top-level AND: every matching run has those metrics."""
    terms = node.items if isinstance(node, And) else (node,) if node is not None else ()
    required: dict[str, list[Comparison]] = {}
    for term in terms:
        if isinstance(term, Comparison) and term.entity == "metrics" and term.op not in ("IS NULL", "IS NOT NULL"):
            required.setdefault(term.key, []).append(term)
    return required


def compile_run_search(node: Node | None, keys: list[OrderKey]) -> CompiledRunSearch:
    """Filter and order of a run search. Missing values sort last in either
    direction; ties fall back to MLflow's default order (newest start first, then run id) so pages are
    stable.

    When the filter already requires the metric a search sorts by (`metrics.acc > 0.9` ... ORDER BY
    metrics.acc), that metric is joined once with an inner join and compared on the join, instead of an
    EXISTS plus an outer join; when it is the first key, the experiments are matched on the metric's
    experiment_id rather than the run's: the (experiment_id, key, value) index then yields the runs in
    order, and each run is found by its id (a condition on the run's experiment as well would let a plan
    on fresh statistics scan the experiment's runs for every metric row). Without order keys, the
    (experiment_id, start_time) index does. When a page is read in an index's order, the filter's other
    terms are probes (see _probe)."""
    required = _required_metric_terms(node)
    joined_terms: dict[int, ColumnElement[bool]] = {}
    joins: list[tuple] = []
    order: list[tuple[OrderColumn, bool]] = []
    first_indexed = not keys
    experiment: SQLColumnExpression[uuid.UUID | None] = ExperimentRun.experiment_id
    column: OrderColumn
    for position, key in enumerate(keys):
        inner = False
        if key.entity in _KV_MODELS:
            alias = aliased(_KV_MODELS[key.entity])
            inner = key.entity == "metrics" and key.key in required
            on = and_(alias.run_id == ExperimentRun.id, alias.key == key.key)
            if inner and position == 0:
                experiment, first_indexed = alias.experiment_id, True
            joins.append((alias, on, not inner))
            column = alias.value
            if inner:
                for term in required.pop(key.key):
                    _check(term, "number", NUMBER_OPS)
                    joined_terms[id(term)] = _compare(alias.value, term.op, term.value)
        elif key.entity == "attributes" and key.key in _RUN_ORDER_ATTRIBUTES:
            column = _RUN_ORDER_ATTRIBUTES[key.key]
            first_indexed = first_indexed or (position == 0 and key.key in _START_TIME_KEYS)
        else:
            raise InvalidParameter(
                f"Invalid order_by key '{key.entity}.{key.key}': expected metrics.<key>, params.<key>, "
                f"tags.<key> or one of {sorted(_RUN_ORDER_ATTRIBUTES)}"
            )
        # An inner-joined metric matched a comparison, so it is never NULL (NaN fails every comparison).
        if not inner and not (key.entity == "attributes" and key.key in _NEVER_NULL_ATTRIBUTES):
            order.append((column.is_(None), True))
        order.append((column, key.ascending))
    # start_time is always set (create_run defaults it), so the (experiment_id, start_time) index
    # serves the default order directly.
    order += [(ExperimentRun.start_time, False), (ExperimentRun.id, True)]

    def comparison(cmp: Comparison) -> ColumnElement[bool]:
        return joined_terms[id(cmp)] if id(cmp) in joined_terms else run_comparison(cmp, probe=first_indexed)

    return CompiledRunSearch(compile_filter(node, comparison), joins, order, int(first_indexed), experiment)


# --- experiments -----------------------------------------------------------------------------------

_EXPERIMENT_TIME_ATTRIBUTES = {
    "creation_time": Experiment.created_at,
    "last_update_time": Experiment.updated_at,
}


def _ms_to_datetime(value: float) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


def experiment_comparison(cmp: Comparison) -> ColumnElement[bool]:
    if cmp.entity == "tags":
        return _kv_exists(ExperimentTag, ExperimentTag.experiment_id, Experiment.id, cmp, "string")
    if cmp.entity != "attributes":
        raise InvalidParameter(f"Invalid entity '{cmp.entity}' in an experiment filter: use attributes or tags")
    if cmp.key == "name":
        _check(cmp, "string", STRING_OPS)
        return _compare(Experiment.name, cmp.op, cmp.value)
    if cmp.key == "experiment_id":
        return _compare_id(Experiment.id, cmp)
    if cmp.key in _EXPERIMENT_TIME_ATTRIBUTES:
        _check(cmp, "number", NUMBER_OPS - {"IN", "NOT IN"})
        return _compare(_EXPERIMENT_TIME_ATTRIBUTES[cmp.key], cmp.op, _ms_to_datetime(float(cast(float, cmp.value))))
    raise InvalidParameter(
        f"Invalid attribute key '{cmp.key}' specified. Valid keys are "
        "['creation_time', 'experiment_id', 'last_update_time', 'name']"
    )


def experiment_order(keys: list[OrderKey]) -> list:
    columns = {"name": Experiment.name, "experiment_id": Experiment.id, **_EXPERIMENT_TIME_ATTRIBUTES}
    clauses = []
    for key in keys:
        if key.entity != "attributes" or key.key not in columns:
            raise InvalidParameter(f"Invalid order_by key '{key.key}': expected one of {sorted(columns)}")
        column = columns[key.key]
        clauses.append(column.asc() if key.ascending else column.desc())
    return [*clauses, Experiment.created_at.desc(), Experiment.id]


# --- logged models ---------------------------------------------------------------------------------

_MODEL_STRING_ATTRIBUTES = {
    "name": LoggedModel.name,
    "status": LoggedModel.status,
    "model_type": LoggedModel.model_type,
}
_MODEL_TIME_ATTRIBUTES = {
    "creation_timestamp": LoggedModel.created_at,
    "creation_time": LoggedModel.created_at,
    "last_updated_timestamp": LoggedModel.updated_at,
}


def logged_model_comparison(cmp: Comparison) -> ColumnElement[bool]:
    if cmp.entity == "tags":
        return _kv_exists(LoggedModelTag, LoggedModelTag.model_id, LoggedModel.id, cmp, "string")
    if cmp.entity == "params":
        return _kv_exists(LoggedModelParam, LoggedModelParam.model_id, LoggedModel.id, cmp, "string")
    if cmp.entity == "metrics":
        return _kv_exists(LoggedModelMetric, LoggedModelMetric.model_id, LoggedModel.id, cmp, "number")
    if cmp.entity != "attributes":
        raise InvalidParameter(f"Invalid entity '{cmp.entity}' in a logged model filter")
    if cmp.key == "model_id":
        return _compare_id(LoggedModel.id, cmp, prefix="m-")
    if cmp.key == "source_run_id":
        return _compare_id(LoggedModel.source_run_id, cmp)
    if cmp.key in _MODEL_STRING_ATTRIBUTES:
        _check(cmp, "string", STRING_OPS)
        return _compare(_MODEL_STRING_ATTRIBUTES[cmp.key], cmp.op, cmp.value)
    if cmp.key in _MODEL_TIME_ATTRIBUTES:
        _check(cmp, "number", NUMBER_OPS - {"IN", "NOT IN"})
        return _compare(_MODEL_TIME_ATTRIBUTES[cmp.key], cmp.op, _ms_to_datetime(float(cast(float, cmp.value))))
    raise InvalidParameter(f"Invalid attribute key '{cmp.key}' in a logged model filter")


def logged_model_order(fields: list[tuple[str, bool]]) -> list:
    columns = {
        "model_id": LoggedModel.id,
        "source_run_id": LoggedModel.source_run_id,
        **_MODEL_STRING_ATTRIBUTES,
        **_MODEL_TIME_ATTRIBUTES,
    }
    clauses = []
    for field, ascending in fields:
        column = columns.get(field.removeprefix("attributes."))
        if column is None:
            raise InvalidParameter(f"Invalid order_by field '{field}': expected one of {sorted(columns)}")
        clauses.append(column.asc() if ascending else column.desc())
    return [*clauses, LoggedModel.created_at.desc(), LoggedModel.id]
