"""Pooled PostgreSQL connections: one the server dropped while it sat idle is replaced, not handed out."""

from __future__ import annotations

from sqlalchemy import text

from shared.db import session as db_session_module
from shared.db.session import Database


def test_a_connection_closed_by_the_server_while_idle_is_replaced(settings, db, monkeypatch):
    monkeypatch.setattr(db_session_module, "IDLE_PING_AFTER_S", 0.0)
    database = Database(settings.database_url, pool_size=1)
    try:
        with database.session_scope() as session:
            first_pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        # The pooled connection is now idle; the server (a restart, an idle timeout, a proxy) closes it.
        with db.engine.connect() as admin:
            assert admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid}).scalar_one()
        with database.session_scope() as session:
            second_pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert second_pid != first_pid
    finally:
        database.dispose()
