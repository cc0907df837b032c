"""Who may see and change monitoring objects: the monitoring scopes on the object's project."""

from __future__ import annotations

import uuid

from shared.core.auth import Access
from shared.core.errors import NotFound

READ = "monitoring:read"
WRITE = "monitoring:write"


def require_visible(access: Access, project_id: uuid.UUID, scope: str, what: str) -> None:
    """The caller's access to the project of `what`; another tenant's object simply does not exist."""
    try:
        access.require_project(project_id, scope)
    except NotFound:
        raise NotFound(f"{what} does not exist") from None
