"""Keyset pagination behind opaque page tokens.

A token holds the (created_at, id) of the last row served, so pages stay stable while rows are added and
the database never walks skipped rows as OFFSET would. Tokens are not secret: a forged one only moves the
cursor inside a query that is already scoped to the caller.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, and_, or_
from sqlalchemy.orm import Session

from shared.core.errors import InvalidParameter


@dataclass(frozen=True)
class Page:
    rows: list[Row[Any]]
    next_page_token: str | None


def encode_page_token(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), row_id.hex]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[datetime, uuid.UUID]:
    try:
        created, row_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        created_at, key = datetime.fromisoformat(created), uuid.UUID(row_id)
    except (ValueError, TypeError):  # bad base64, JSON, shape, date or uuid
        raise InvalidParameter("Invalid page_token: pass back a next_page_token unchanged") from None
    if created_at.tzinfo is None:
        raise InvalidParameter("Invalid page_token: pass back a next_page_token unchanged")
    return created_at, key


def paginate(
    session: Session,
    stmt: Select,
    *,
    created_col: Any,
    id_col: Any,
    page_token: str | None,
    max_results: int,
    newest_first: bool = False,
) -> Page:
    """Run `stmt` ordered by (created_col, id_col) and return one page of its rows."""
    if page_token:
        created_at, last_id = decode_page_token(page_token)
        if newest_first:
            after = or_(created_col < created_at, and_(created_col == created_at, id_col < last_id))
        else:
            after = or_(created_col > created_at, and_(created_col == created_at, id_col > last_id))
        stmt = stmt.where(after)
    order = (created_col.desc(), id_col.desc()) if newest_first else (created_col.asc(), id_col.asc())
    stmt = stmt.add_columns(created_col.label("page_created_at"), id_col.label("page_id"))
    rows = session.execute(stmt.order_by(*order).limit(max_results + 1)).all()
    if len(rows) <= max_results:
        return Page(list(rows), None)
    last = rows[max_results - 1]
    return Page(list(rows[:max_results]), encode_page_token(last.page_created_at, last.page_id))
