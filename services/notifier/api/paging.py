"""The query every list of an organization's objects takes: which organization, and where the page starts."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Query

from services.notifier.domain.organizations import PageRequest
from shared.core.deps import MaxResults, PageToken


def _page_request(
    organization_id: uuid.UUID | None = Query(None), page_token: PageToken = None, max_results: MaxResults = 100
) -> PageRequest:
    return PageRequest(organization_id, page_token, max_results)


OrgPage = Annotated[PageRequest, Depends(_page_request)]
