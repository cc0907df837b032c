"""Query parameters every paginated list of the registry takes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

PageToken = Annotated[
    str | None, Query(max_length=512, pattern=r"^[A-Za-z0-9_-]*$", description="next_page_token of the previous page")
]
MaxResults = Annotated[int, Query(ge=1, le=500, description="Page size (at most 500)")]
