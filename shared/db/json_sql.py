"""Building MLflow's JSON messages inside PostgreSQL: pieces of SQLAlchemy Core for the statements of the
hot read routes, which send the text PostgreSQL rendered instead of rows turned into objects and back
into JSON. Each piece gives what the Python renderers give for the same value (tests hold them equal)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Float, String, cast, extract, func, literal_column, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import SQLCoreOperations

# A column, or an expression over columns.
Expression = SQLCoreOperations[Any]
EMPTY_ARRAY: ColumnElement[Any] = literal_column("'[]'::json")


@dataclass(frozen=True)
class Statement:
    """SQL for the driver; `params` holds the values compiled into it, add the call's own."""

    sql: str
    params: dict[str, Any]


def compiled(dialect: Dialect, statement: Any) -> Statement:
    """A statement compiled once for `dialect` (a hot route keeps it and sends only its own values)."""
    rendered = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    return Statement(str(rendered), dict(rendered.params))


def constant(text: str) -> ColumnElement[Any]:
    """A string literal inlined in the statement (keys, fixed values): its text stays the same for every call."""
    return literal_column("'" + text.replace("'", "''") + "'")


def json_object(builder: Any = func.json_build_object, /, **fields: Expression) -> ColumnElement[Any]:
    """{key: value, ...} in the order given (json_build_object), or in jsonb's order with jsonb_build_object."""
    arguments: list[Expression] = []
    for key, value in fields.items():
        arguments += [constant(key), value]
    return builder(*arguments)


def json_array(element: Expression, *where: Expression, order_by: Any = None) -> ColumnElement[Any]:
    """JSON array of `element` over the rows of `where` (in `order_by`'s order), `[]` when there are none."""
    aggregate = func.json_agg(element if order_by is None else aggregate_order_by(element, order_by))
    return select(func.coalesce(aggregate, EMPTY_ARRAY)).where(*where).scalar_subquery()


def hex_id(column: Expression) -> ColumnElement[Any]:
    """A UUID as MLflow shows ids: 32 hex digits (uuid.hex)."""
    return func.replace(cast(column, String), constant("-"), constant(""))


def epoch_ms(column: Expression) -> ColumnElement[Any]:
    """A timestamp as `int(moment.timestamp() * 1000)` computes it, to the same float rounding: the exact
    epoch seconds (numeric) rounded to a double, times 1000 in double precision, truncated."""
    seconds = cast(extract("epoch", column), Float(precision=53))
    return cast(func.trunc(seconds * literal_column("1000::float8")), BigInteger)
