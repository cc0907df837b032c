"""The one Tessera schema: `shared.db.models` for tables, `shared.db.session` for engines and sessions."""

from shared.db.base import Base
from shared.db.session import Database, get_database

__all__ = ["Base", "Database", "get_database"]
