"""Small SQL helpers shared by the tracking domain modules."""

from __future__ import annotations

import base64
import binascii
import uuid

import orjson
from sqlalchemy import ColumnElement, SQLColumnExpression, String, Uuid, any_, bindparam, cast, func
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from shared.core.errors import InvalidParameter


def ids_match(session: Session, column: SQLColumnExpression[uuid.UUID], ids: list[uuid.UUID]) -> ColumnElement[bool]:
    """`column IN ids`. On PostgreSQL as `= ANY(:array)`: one bind parameter whatever the page size,
    so the statement text is stable (cached, prepared) instead of re-rendered with N placeholders. The
    array travels as one comma-separated string: the driver adapts a list of UUIDs one element at a
    time, which costs more than the query for a page of runs."""
    if session.get_bind().dialect.name == "postgresql":
        as_text = bindparam(None, ",".join(map(str, ids)), type_=String)
        return column == any_(cast(func.string_to_array(as_text, ","), postgresql.ARRAY(Uuid)))
    return column.in_(ids)


def encode_page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"offset": offset})).decode()


def decode_page_token(token: str | None) -> int:
    """Page tokens are opaque to clients; inside they are an offset into the ordered result."""
    if not token:
        return 0
    try:
        offset = orjson.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (binascii.Error, ValueError, KeyError, TypeError, AttributeError, orjson.JSONDecodeError):
        raise InvalidParameter(f"Invalid page token '{token}'") from None
    if not isinstance(offset, int) or offset < 0:
        raise InvalidParameter(f"Invalid page token '{token}'")
    return offset
