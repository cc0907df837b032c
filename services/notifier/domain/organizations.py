"""Which organization a notifier request acts in, and the pages of its objects."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, select

from shared.core.auth import Access
from shared.core.errors import InvalidParameter
from shared.core.pagination import RowPage, paginate
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


@dataclass(frozen=True)
class PageRequest:
    """A list of an organization's objects: which organization (see `resolve_organization`), and where
    the page starts."""

    organization_id: uuid.UUID | None
    page_token: str | None
    max_results: int


def page_in_organization(
    session: Any,
    access: Access,
    request: PageRequest,
    model: Any,
    *criteria: ColumnElement[bool],
    newest_first: bool = False,
) -> RowPage:
    """A page of the organization's rows of `model` (by creation, then id) that meet `criteria`."""
    org = resolve_organization(access, request.organization_id, "notifications:read")
    return paginate(
        session,
        select(model).where(model.organization_id == org.id, *criteria),
        created_col=model.created_at,
        id_col=model.id,
        page_token=request.page_token,
        max_results=request.max_results,
        newest_first=newest_first,
    )
