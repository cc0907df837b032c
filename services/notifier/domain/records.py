"""How alerts and notifications are stored as JSON, and read back into the domain's value types.

A notification is stored with everything needed to render it again, byte for byte: a retried
delivery sends exactly what the first attempt sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import orjson
import psycopg
from sqlalchemy import Row, Table
from sqlalchemy.orm import Session

from services.notifier.domain.alerts import Alert
from services.notifier.domain.messages import Notification as Message
from shared.db.base import Base
from shared.db.models import Notification


def table(model: type[Base]) -> Table:
    """A mapped class's table, as the Table it is (for Core statements on plain rows)."""
    return model.__table__


def postgres(session: Session) -> psycopg.Connection[Any] | None:
    """The session's psycopg connection (in its transaction) when the database is PostgreSQL, else None.

    The hot stages write each table once per batch with one statement over arrays (`unnest`) on it: an
    executemany through SQLAlchemy spends more Python per row (bind processing, psycopg's per-row
    pipeline work) than PostgreSQL spends storing the row. Parameters are sent in binary (`%(name)b`):
    in text, psycopg escapes every quote of a JSON element of an array with a regular expression.
    psycopg prepares a statement run five times, so each is planned once per connection. The embedded
    SQLite database takes the portable statements.
    """
    if session.get_bind().dialect.name != "postgresql":
        return None
    # What the session holds unwritten must be visible to these statements, as to its own.
    session.flush()
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return None
    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    return driver


def json_text(value: Any) -> str:
    """A JSON column's value as text, for a `::jsonb` array parameter."""
    return orjson.dumps(value, default=_plain, option=orjson.OPT_NON_STR_KEYS).decode()


def _plain(value: Any) -> dict[Any, Any]:
    # An alert's labels and annotations are read-only mappings.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def alert_of(row: Row) -> Alert:
    """The alert of a row of notification_group_alerts."""
    return Alert(
        labels=row.labels, starts_at=row.starts_at, ends_at=row.ends_at, annotations=row.annotations, url=row.url
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "starts_at": _iso(alert.starts_at),
        "ends_at": _iso(alert.ends_at),
        "url": alert.url,
    }


def payload_json(
    alerts: Sequence[Alert], *, group_labels: Mapping[str, str], link: str | None, receiver: str
) -> dict[str, Any]:
    return {
        "alerts": [alert_json(alert) for alert in alerts],
        "group_labels": dict(group_labels),
        "link": link,
        "receiver": receiver,
    }


def message_of_row(row: Mapping[str, Any]) -> Message:
    """The message of a notification's row as a mapping (one about to be inserted)."""
    return message_of(SimpleNamespace(**row))


def message_of(row: Notification | Row | SimpleNamespace) -> Message:
    """The message of a notification (an instance, or a row of its id, group_key, payload, created_at)."""
    payload = row.payload
    alerts = tuple(
        Alert(
            labels=item["labels"],
            annotations=item["annotations"],
            starts_at=datetime.fromisoformat(item["starts_at"]),
            ends_at=datetime.fromisoformat(item["ends_at"]) if item["ends_at"] else None,
            url=item["url"],
        )
        for item in payload["alerts"]
    )
    return Message(
        id=str(row.id),
        group_key=row.group_key,
        alerts=alerts,
        created_at=row.created_at,
        group_labels=payload["group_labels"],
        link=payload["link"],
        receiver=payload["receiver"],
    )
