"""Alembic environment: one migration tree for the one schema, on PostgreSQL and SQLite alike."""

from __future__ import annotations

from alembic import context
from sqlalchemy import DateTime

import shared.db.models  # noqa: F401  (registers every table on Base.metadata)
from shared.db.base import Base, UTCDateTime
from shared.db.session import make_engine

config = context.config


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from shared.core.settings import Settings

    return Settings().database_url


def _render_item(type_, obj, autogen_context):
    # Migrations must not import application types: render our tz-aware type as plain SQLAlchemy.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _compare_type(context_, inspected_column, metadata_column, inspected_type, metadata_type):
    if isinstance(metadata_type, UTCDateTime):
        return not isinstance(inspected_type, DateTime)
    return None


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_database_url())
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=_render_item,
        compare_type=_compare_type,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
