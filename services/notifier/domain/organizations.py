"""Which organization a notifier request acts in."""

from __future__ import annotations

import uuid

from shared.core.auth import Access
from shared.core.errors import InvalidParameter
from shared.db.models import Organization


def resolve_organization(
    access: Access, organization_id: uuid.UUID | None, scope: str, min_role: str | None = None
) -> Organization:
    """The organization a request acts in: the one named, else the API key's, else the caller's only one."""
    if organization_id is None:
        organization_id = access.principal.organization_id
    if organization_id is None:
        org_ids = access.session.scalars(access.readable_org_ids()).all()
        if len(org_ids) != 1:
            raise InvalidParameter("Name the organization: pass organization_id")
        organization_id = org_ids[0]
    return access.require_org(organization_id, scope, min_role)
