"""Engines and sessions. One `Database` per process (per settings), shared by the app and the workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, cast

import orjson
from sqlalchemy import CursorResult, Engine, Result, create_engine, event, exc
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # Several processes (API, worker, beat) write the embedded database: WAL lets readers run during
    # a write, and the busy timeout makes writers queue instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# A pooled connection idle longer than this is pinged before use (the server or a proxy may have closed
# it); a busy connection is not: `pool_pre_ping` would add a round trip to every request.
IDLE_PING_AFTER_S = 10.0


def _mark_returned(_dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
    record.info["returned_at"] = time.monotonic()


def _ping_if_idle(
    dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    returned_at = record.info.get("returned_at")
    if returned_at is None or time.monotonic() - returned_at < IDLE_PING_AFTER_S:
        return
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
    except Exception as error:
        # The pool discards this connection and checks out (or opens) another.
        raise exc.DisconnectionError() from error


def _json_text(value: Any) -> str:
    # Non-string keys become strings, as with json.dumps.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def make_engine(url: str, *, echo: bool = False, pool_size: int = 10) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # orjson reads and writes JSON columns (notification payloads, labels, configs) several times faster
    # than the stdlib.
    engine = create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        json_serializer=_json_text,
        json_deserializer=orjson.loads,
    )
    event.listen(engine, "checkin", _mark_returned)
    event.listen(engine, "checkout", _ping_if_idle)
    return engine


class Database:
    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10) -> None:
        self.url = url
        self.engine = make_engine(url, echo=echo, pool_size=pool_size)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session_scope(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on any error."""
        session = self.sessionmaker()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


def affected_rows(result: Result[Any]) -> int:
    """How many rows an INSERT, UPDATE or DELETE wrote (`Session.execute` types its result as a plain
    Result; a DML statement's is a CursorResult)."""
    return cast(CursorResult[Any], result).rowcount


@lru_cache(maxsize=8)
def get_database(url: str, echo: bool = False, pool_size: int = 10) -> Database:
    return Database(url, echo=echo, pool_size=pool_size)
