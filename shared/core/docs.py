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
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

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


def install_openapi(app: FastAPI) -> None:
    """/openapi.json also holds the models that operations name by hand."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = generate()
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        for name, model in _NAMED_MODELS.items():
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for nested, nested_schema in schema.pop("$defs", {}).items():
                components.setdefault(nested, nested_schema)
            components.setdefault(name, schema)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
