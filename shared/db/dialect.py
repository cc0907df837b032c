"""Statements whose SQL differs by backend, written once for every service."""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.db.base import Base


def upsert_insert(session: Session, model: type[Base] | Table):
    """INSERT with the dialect's ON CONFLICT support (PostgreSQL in production, SQLite embedded). Given a
    Table rather than a mapped class, a list of rows skips the ORM's per-row bulk-insert bookkeeping."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(model)
