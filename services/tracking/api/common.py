"""Request/response plumbing for the MLflow-compatible routers: orjson in and out, no Pydantic on the
hot paths (a 1000-metric batch would otherwise cost more to validate than to store)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request, Response

from shared.core.errors import InvalidParameter, TesseraError


class MalformedRequest(TesseraError):
    code = "MALFORMED_REQUEST"


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"Malformed JSON request body: {exc}") from None
    if not isinstance(body, dict):
        raise MalformedRequest("The request body must be a JSON object")
    return body


def _query(request: Request) -> dict[str, Any]:
    """GET parameters as the mlflow client sends them: scalars, repeated keys for lists."""
    params: dict[str, Any] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        params[key] = values if len(values) > 1 else values[0]
    return params


JsonBody = Annotated[dict[str, Any], Depends(_json_body)]
QueryParams = Annotated[dict[str, Any], Depends(_query)]

EMPTY = b"{}"


def respond(content: Any = None) -> Response:
    return Response(EMPTY if content is None else orjson.dumps(content), media_type="application/json")


def respond_page(field: str, items: list, next_token: str | None) -> Response:
    """MLflow's page envelope: the items, and `next_page_token` only when there is a next page."""
    content: dict[str, Any] = {field: items}
    if next_token:
        content["next_page_token"] = next_token
    return respond(content)


def rendered_body(field: str, item_json: str, next_token: str | None = None) -> bytes:
    """`{field: item}` for an item the database already rendered as JSON, and MLflow's `next_page_token`
    when there is a next page."""
    token = f',"next_page_token":{orjson.dumps(next_token).decode()}' if next_token else ""
    return f'{{"{field}":{item_json}{token}}}'.encode()


def respond_rendered(field: str, item_json: str, next_token: str | None = None) -> Response:
    return Response(rendered_body(field, item_json, next_token), media_type="application/json")


def run_id_of(body: dict[str, Any]) -> str | None:
    """MLflow sends both run_id and the deprecated run_uuid; either names the run."""
    return body.get("run_id") or body.get("run_uuid")


def as_list(value: Any, what: str) -> list:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        return [value]
    raise InvalidParameter(f"Invalid value for '{what}': expected a list")


def key_value_pairs(items: Any, what: str) -> list[tuple[Any, Any]]:
    pairs = []
    for item in as_list(items, what):
        if not isinstance(item, dict):
            raise InvalidParameter(f"Invalid value for '{what}': expected objects with 'key' and 'value'")
        pairs.append((item.get("key"), item.get("value")))
    return pairs
