"""One page of any list: the envelope every native list endpoint answers, and the queries behind it.

Every list route of the native API (`/api/v1/...`) answers `Page[XRead]`, `{"items": [...],
"next_page_token": "..." | null}`, and takes `page_token` and `max_results` (shared/core/deps.py). Pass
`next_page_token` back as `page_token` for the next page; null means this was the last one.

Keyset pagination behind opaque page tokens.

A token holds the (created_at, id) of the last row served, so pages stay stable while rows are added and
the database never walks skipped rows as OFFSET would. Tokens are not secret: a forged one only moves the
cursor inside a query that is already scoped to the caller.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import Row, Select, and_, or_
from sqlalchemy.orm import Session

from shared.core.errors import InvalidParameter

ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    """The one list envelope of the native API."""

    items: list[ItemT]
    next_page_token: str | None = Field(
        None, description="Pass back as page_token for the next page; null on the last page"
    )


@dataclass(frozen=True)
class RowPage:
    rows: list[Row[*tuple[Any, ...]]]
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
) -> RowPage:
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
        return RowPage(list(rows), None)
    last = rows[max_results - 1]
    return RowPage(list(rows[:max_results]), encode_page_token(last.page_created_at, last.page_id))


def entity_page(page: RowPage) -> dict[str, Any]:
    """The envelope for a page of single-entity rows; the route's response model reads the ORM objects."""
    return {"items": [row[0] for row in page.rows], "next_page_token": page.next_page_token}


def sequence_page(items: Sequence[Any], *, page_token: str | None, max_results: int) -> dict[str, Any]:
    """The envelope for one page of a short list computed in memory (summaries, in-process stats).

    The token is an offset: such lists are small and are not written to while read."""
    start = 0
    if page_token:
        try:
            raw = base64.urlsafe_b64decode(page_token + "=" * (-len(page_token) % 4)).decode()
            start = int(raw.removeprefix("at:"))
        except ValueError:
            raise InvalidParameter("Invalid page_token: pass back a next_page_token unchanged") from None
        if start < 0:
            raise InvalidParameter("Invalid page_token: pass back a next_page_token unchanged")
    end = start + max_results
    token = base64.urlsafe_b64encode(f"at:{end}".encode()).decode().rstrip("=") if end < len(items) else None
    return {"items": list(items[start:end]), "next_page_token": token}
