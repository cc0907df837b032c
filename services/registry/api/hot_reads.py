"""The hot side of the registry reads a serving stack and a UI make most (a model by name, a version by
alias, the models' list): what `shared.core.hot_routes` runs before the usual endpoints in
mlflow_registry.py.

Each handler sends one statement (domain/registry_json.py): the answer rendered by PostgreSQL, each row
with the caller's default-project candidates, and serves the text only when there is an answer and
exactly one candidate that the caller may read (role from memory, as Access.require_project decides).
Everything else is left to the usual endpoint: X-Tessera-Project, a caller or role not remembered, a name
that does not validate, a missing model or alias, a search page with no model, the `latest` alias, a
search with a filter other than the prompt exclusion MLflow's client adds (MLflow's parser is imported
only by the usual path), any error.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect

from services.registry.domain import mlflow_registry, registry_json
from services.registry.domain.models import READ, validate_name
from shared.core.auth import remembered_project_permission
from shared.core.errors import TesseraError
from shared.core.hot_routes import HotRequest
from shared.db.json_sql import Statement

_DIALECT = psycopg_dialect()


def _body(field: str, item_json: str, next_token: str | None = None) -> bytes:
    token = f',"next_page_token":{orjson.dumps(next_token).decode()}' if next_token else ""
    return f'{{"{field}":{item_json}{token}}}'.encode()


def _text(value: Any) -> str | None:
    """A query parameter given once, as a string."""
    return value if isinstance(value, str) else None


async def _in_default_project(request: HotRequest, answer: Statement, values: dict[str, Any]) -> list[str] | None:
    """The answer's texts over the caller's default project, or None when the usual path must decide."""
    principal = request.principal
    if request.header(b"x-tessera-project") is not None or not principal.has_scope(READ):
        return None
    caller: dict[str, uuid.UUID | None] = {
        "user_id": principal.user_id,
        "organization_id": principal.organization_id,
        "project_id": principal.project_id,
    }
    async with request.connection() as conn:
        rows = await (await conn.execute(answer.sql, {**answer.params, **values, **caller})).fetchall()
    # Each row: a text and the candidates (the same on every row). No row: the usual path decides.
    if not rows or len(rows[0][1]) != 1:
        return None
    if remembered_project_permission(principal, rows[0][1][0], READ) is not True:
        return None
    return [row[0] for row in rows]


def _narrowing(request: HotRequest) -> tuple[bool, bool]:
    return request.principal.organization_id is not None, request.principal.project_id is not None


async def get_registered_model(request: HotRequest) -> bytes | None:
    name = _text(request.params.get("name"))
    try:
        name = validate_name(name)
    except TesseraError:
        return None
    statement = registry_json.model_by_name(_DIALECT, *_narrowing(request))
    texts = await _in_default_project(request, statement, {"name": name})
    return _body("registered_model", texts[0]) if texts is not None and len(texts) == 1 else None


async def get_model_version_by_alias(request: HotRequest) -> bytes | None:
    name, alias = _text(request.params.get("name")), _text(request.params.get("alias"))
    try:
        name = validate_name(name)
    except TesseraError:
        return None
    if not alias or alias.lower() == "latest":
        return None
    statement = registry_json.version_by_alias(_DIALECT, *_narrowing(request))
    texts = await _in_default_project(request, statement, {"name": name, "alias": alias})
    return _body("model_version", texts[0]) if texts is not None and len(texts) == 1 else None


async def search_registered_models(request: HotRequest) -> bytes | None:
    params = request.params
    max_results, page_token = params.get("max_results"), params.get("page_token")
    order_by = params.get("order_by", [])
    order_by = [order_by] if isinstance(order_by, str) else order_by
    if params.get("filter") not in (None, "", mlflow_registry.PROMPTS_LEFT_OUT):
        return None
    if not all(isinstance(key, str) for key in order_by):
        return None
    if max_results is not None and not (
        isinstance(max_results, str) and max_results.isascii() and max_results.isdigit()
    ):
        return None
    if page_token is not None and not isinstance(page_token, str):
        return None
    try:
        limit = mlflow_registry.search_models_limit(None if max_results is None else int(max_results))
        offset = mlflow_registry.page_offset(page_token)
        statement = registry_json.search_models_page(_DIALECT, tuple(order_by), *_narrowing(request))
    except TesseraError:
        return None
    texts = await _in_default_project(request, statement, {"offset": offset, "fetch": limit + 1})
    if texts is None:
        return None
    token = mlflow_registry.next_page_token(offset, limit, len(texts))
    return _body("registered_models", "[" + ",".join(texts[:limit]) + "]", token)
