"""Statements whose SQL differs by backend, written once for every service."""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
from sqlalchemy.dialects.sqlite import Insert as SQLiteInsert
from sqlalchemy.orm import Session

from shared.db.base import Base

# What `insert_for` builds: an INSERT with ON CONFLICT, in the backend's dialect.
UpsertInsert = PostgresInsert | SQLiteInsert


def insert_for(dialect_name: str, target: type[Base] | Table) -> UpsertInsert:
    """INSERT with the backend's ON CONFLICT support (PostgreSQL in production, SQLite embedded). Given a
    Table rather than a mapped class, a list of rows skips the ORM's per-row bulk-insert bookkeeping (and
    the statement is compiled once); a mapped class is needed only to RETURN entities."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(target)


def upsert_insert(session: Session, target: type[Base] | Table) -> UpsertInsert:
    return insert_for(session.get_bind().dialect.name, target)
