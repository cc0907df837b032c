"""The console's routes, static files and error page, mounted by the composition root (tessera.platform)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from tessera.console.api import ApiError
from tessera.console.views import admin, alerts, deployments, models, monitors, notifications, routing
from tessera.console.web import HERE, ORG_COOKIE, PROJECT_COOKIE, ConsoleDep, templates

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/")
async def index() -> RedirectResponse:
    return RedirectResponse("/console/deployments", status_code=303)


@router.get("/switch")
async def switch(c: ConsoleDep, org: str = "", project: str = "", next: str = "/console/") -> RedirectResponse:
    # Only console paths: `next` must never send the browser elsewhere.
    target = next if next.startswith("/console/") else "/console/"
    response = RedirectResponse(target, status_code=303)
    secure = c.request.url.scheme == "https"
    if c.org is not None:
        response.set_cookie(ORG_COOKIE, str(c.org["id"]), samesite="lax", secure=secure, httponly=True)
    if project and c.project is not None:
        response.set_cookie(PROJECT_COOKIE, str(c.project["id"]), samesite="lax", secure=secure, httponly=True)
    else:
        response.delete_cookie(PROJECT_COOKIE)
    return response


for module in (deployments, models, monitors, alerts, notifications, admin):
    router.include_router(module.router)
router.include_router(notifications.silences_router)
router.include_router(routing.rules_router)
router.include_router(routing.mute_windows_router)


async def favicon() -> FileResponse:
    # Browsers ask every site for /favicon.ico (the sign-in page too); without one each page load logs a 404.
    return FileResponse(
        HERE / "static" / "favicon.png", media_type="image/png", headers={"Cache-Control": "public, max-age=86400"}
    )


def mount(app: FastAPI) -> None:
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.include_router(router)
    if not any(getattr(route, "path", None) == "/favicon.ico" for route in app.routes):
        app.add_api_route("/favicon.ico", favicon, include_in_schema=False)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> HTMLResponse:
        # A page whose API call failed (most often: not found, or not allowed) shows why, in the layout's place.
        html = templates.get_template("error.html").render(error=exc, request=request)
        return HTMLResponse(html, status_code=exc.status)
