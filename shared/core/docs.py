"""API documentation pages that work without internet access.

Swagger UI (`/docs`) and ReDoc (`/redoc`) load their scripts, styles and icon from `/docs-assets/`, files
that come installed with the `fastapi-offline` package (Swagger UI's bundle and CSS, ReDoc's standalone
build), never from a CDN; ReDoc is told not to fetch Google's fonts.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

# Models that operations name by hand (openapi_extra, JSON inside a multipart part): added to every
# document's components, so that a reference to them always resolves.
_NAMED_MODELS: dict[str, type[BaseModel]] = {}

ASSETS_URL = "/docs-assets"
# Pages that never reach beyond this server: ReDoc's build links Redocly's logo on their CDN.
_LOCAL_ONLY = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; font-src 'self' data:"
}
ASSETS_DIR = files("fastapi_offline") / "static"


def install_docs(app: FastAPI) -> None:
    """Serve /docs and /redoc from local assets (build the app with docs_url=None, redoc_url=None)."""
    app.mount(ASSETS_URL, StaticFiles(directory=str(ASSETS_DIR)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = "/docs/oauth2-redirect"

    def _root(request: Request) -> str:
        # Behind a proxy that strips a prefix, links must carry it back.
        return request.scope.get("root_path", "").rstrip("/")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} — API",
            oauth2_redirect_url=root + oauth2_redirect_url,
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        )
        page.headers.update(_LOCAL_ONLY)
        return page

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} — API reference",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
        page.headers.update(_LOCAL_ONLY)
        return page


def schema_ref(model: type[BaseModel]) -> dict[str, Any]:
    """A reference to `model` in the OpenAPI components, for schemas written by hand."""
    _NAMED_MODELS[model.__name__] = model
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def json_part(model: type[BaseModel]) -> dict[str, Any]:
    """The schema extras of a multipart part that carries `model` as JSON text (OpenAPI 3.1)."""
    return {"contentMediaType": "application/json", "contentSchema": schema_ref(model)}


class ErrorBody(BaseModel):
    """What every error answers, whatever the service (shared/core/web.py's handlers)."""

    error_code: str = Field(description="Machine-readable code (MLflow's codes: RESOURCE_DOES_NOT_EXIST, ...)")
    message: str
    details: dict[str, Any] | None = Field(None, description="For validation errors, each problem: loc, msg, type")


_ERROR_REASONS = {
    400: "Invalid argument (a value the server refuses)",
    401: "No or bad credentials",
    403: "The caller may not do this",
    404: "A named object does not exist (or is not the caller's to see)",
    409: "Conflicts with existing data",
    413: "Request body too large",
    422: "Request does not match the schema",
    502: "The model server failed to answer",
    503: "No model server is running for the deployment",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route that answers these error statuses beyond the ones found from its dependencies."""
    return {status: {"model": ErrorBody, "description": _ERROR_REASONS[status]} for status in statuses}


# Routes that check credentials themselves (the serving gateway) declare this as `openapi_extra`.
AUTHENTICATED_BY_BEARER: dict[str, Any] = {"security": [{"bearer": []}]}


def _needs(route: RouteContext, calls: set[Any]) -> bool:
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        if dependant.call in calls:
            return True
        pending.extend(dependant.dependencies)
    return False


# How a caller proves who they are (shared/core/deps.py): a bearer token (API key or JWT), or the browser's
# session cookie (state-changing requests with it also need the CSRF checks).
_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "An API key or a token from POST /api/v1/auth/login"},
    "session": {"type": "apiKey", "in": "cookie", "name": "tessera_session"},
}


def _security(route: RouteContext) -> list[dict[str, list[str]]]:
    from shared.core import deps

    if _needs(route, {deps._principal}):
        return [{"bearer": []}, {"session": []}]
    if _needs(route, {deps._optional_principal}):
        return [{}, {"bearer": []}, {"session": []}]
    return []


def _error_statuses(route: RouteContext, method: str, operation: dict[str, Any], validation_status: int) -> set[int]:
    """The statuses the platform's error handlers can answer for this operation."""
    from shared.core import deps  # deps builds on the session and auth machinery, which imports far more

    statuses = {400, validation_status} if operation.get("parameters") or "requestBody" in operation else set()
    if _needs(route, {deps._principal}) or operation.get("security") == AUTHENTICATED_BY_BEARER["security"]:
        statuses |= {401, 403, 404}
    elif _needs(route, {deps._optional_principal}):
        statuses |= {401, 403}
    if method != "get":
        statuses.add(409)
    if "requestBody" in operation:
        statuses.add(413)
    return statuses


def install_openapi(app: FastAPI, *, bad_request_prefixes: tuple[str, ...] = ()) -> None:
    """/openapi.json also holds the models that operations name by hand, and documents every error an
    operation can answer with the one error body; paths under `bad_request_prefixes` (MLflow's API)
    answer schema violations with 400 instead of 422."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = generate()
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        named: dict[str, type[BaseModel]] = {**_NAMED_MODELS, "ErrorBody": ErrorBody}
        for name, model in named.items():
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for nested, nested_schema in schema.pop("$defs", {}).items():
                components.setdefault(nested, nested_schema)
            components.setdefault(name, schema)
        # FastAPI's own validation error shape is never sent: the handler answers ErrorBody.
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        spec["components"]["securitySchemes"] = _SECURITY_SCHEMES
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        # Included routers are walked as FastAPI's own schema generation walks them (with their prefixes
        # and router-level dependencies).
        for route in iter_route_contexts(app.routes):
            path, methods = route.path_format, route.methods
            if not isinstance(route.original_route, APIRoute) or not route.include_in_schema or not path or not methods:
                continue
            validation_status = 400 if path.startswith(bad_request_prefixes) else 422
            for method in methods:
                operation = spec["paths"].get(path, {}).get(method.lower())
                if operation is None:
                    continue
                security = _security(route)
                if security and "security" not in operation:
                    operation["security"] = security
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                for status in sorted(_error_statuses(route, method.lower(), operation, validation_status)):
                    responses.setdefault(str(status), {"description": _ERROR_REASONS[status], "content": error})
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
