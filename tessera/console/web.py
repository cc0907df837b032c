"""What every console page shares: who is signed in, the chosen organization and project, the user's roles
there (which buttons to draw), the CSRF token, and rendering a template as a page or as an htmx fragment."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from shared.core.auth import ROLE_RANK, effective_project_role
from shared.core.browser_session import CSRF_COOKIE, CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, check_cookie_request
from tessera.console.api import Api, ApiError

HERE = Path(__file__).parent
ORG_COOKIE = "tessera_console_org"
PROJECT_COOKIE = "tessera_console_project"
PAGE_SIZE = 50

templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))


def _when(value: str | None) -> str:
    if not value:
        return "—"
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _short(value: Any) -> str:
    return str(value)[:8] if value else "—"


templates.filters["when"] = _when
templates.filters["short"] = _short
templates.filters["pct"] = lambda value: "—" if value is None else f"{value * 100:.1f} %"


@dataclass
class Console:
    request: Request
    api: Api
    me: dict[str, Any]
    orgs: list[dict[str, Any]]
    org: dict[str, Any] | None
    projects: list[dict[str, Any]]
    project: dict[str, Any] | None
    csrf_token: str | None
    flash: list[tuple[str, str]] = field(default_factory=list)

    # --- roles: what to draw; the API decides what is allowed -------------------------------------
    @property
    def org_role(self) -> str | None:
        return self.org["role"] if self.org else None

    def project_role(self, project_id: Any) -> str | None:
        org = next(
            (
                o
                for o in self.orgs
                for p in self.projects
                if str(p["id"]) == str(project_id) and str(p["organization_id"]) == str(o["id"])
            ),
            self.org,
        )
        if org is None:
            return None
        explicit = next((r["role"] for r in self.me["project_roles"] if str(r["project_id"]) == str(project_id)), None)
        return effective_project_role(org["role"], explicit)

    def can_write(self, project_id: Any) -> bool:
        role = self.project_role(project_id)
        return role is not None and ROLE_RANK[role] >= ROLE_RANK["member"]

    @property
    def org_member(self) -> bool:
        """May change the organization's notification rules, silences and mute windows."""
        return self.org_role is not None and ROLE_RANK[self.org_role] >= ROLE_RANK["member"]

    @property
    def org_id(self) -> str | None:
        return str(self.org["id"]) if self.org else None

    @property
    def org_admin(self) -> bool:
        return self.org_role is not None and ROLE_RANK[self.org_role] >= ROLE_RANK["admin"]

    @property
    def project_ids(self) -> list[str]:
        """The projects a list shows: the chosen one, or every project of the chosen organization."""
        return [str(self.project["id"])] if self.project else [str(p["id"]) for p in self.projects]

    def project_name(self, project_id: Any) -> str:
        return next((p["name"] for p in self.projects if str(p["id"]) == str(project_id)), _short(project_id))

    # --- rendering --------------------------------------------------------------------------------
    def render(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = templates.get_template(template).render(c=self, request=self.request, **context)
        return HTMLResponse(html, status_code=status_code)

    @property
    def is_htmx(self) -> bool:
        return self.request.headers.get("hx-request") == "true"


async def _console(request: Request) -> AsyncIterator[Console]:
    csrf_token = request.cookies.get(CSRF_COOKIE)
    if request.method == "POST":
        if SESSION_COOKIE in request.cookies and "authorization" not in request.headers:
            # Every console post is an HTML form (or htmx acting as one): same origin AND the double-submit
            # token, whatever the API call it turns into (JSON bodies need only the first).
            await check_cookie_request(request, require_token=True)
        form = await request.form()
        csrf_token = str(form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or "") or None
    api = Api(request, csrf_token=csrf_token)
    try:
        try:
            me = await api.get("/api/v1/auth/me")
        except ApiError as exc:
            if exc.status == 401:
                raise _sign_in(request) from None
            raise
        orgs = me["organizations"]
        chosen = request.query_params.get("org") or request.cookies.get(ORG_COOKIE)
        org = next((o for o in orgs if str(o["id"]) == chosen), orgs[0] if orgs else None)
        projects = []
        if org is not None:
            projects = (await api.page(f"/api/v1/orgs/{org['id']}/projects", max_results=200)).items
        chosen_project = request.query_params.get("project") or request.cookies.get(PROJECT_COOKIE)
        project = next((p for p in projects if str(p["id"]) == chosen_project), None)
        yield Console(request, api, me, orgs, org, projects, project, request.cookies.get(CSRF_COOKIE))
    finally:
        await api.aclose()


def _sign_in(request: Request) -> HTTPException:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = f"/login?next={quote(target)}"
    # htmx follows HX-Redirect with a full page load; a plain browser follows the 303.
    return HTTPException(status_code=303, detail="Sign in", headers={"Location": location, "HX-Redirect": location})


ConsoleDep = Annotated[Console, Depends(_console)]


def with_status(response: HTMLResponse, status_code: int) -> HTMLResponse:
    """A page re-rendered to show the API's refusal keeps the API's status (422, 403, 409...)."""
    response.status_code = status_code
    return response


async def act_then_show(
    action: Awaitable[Any], show: Callable[..., Awaitable[HTMLResponse]], done: Callable[[Any], str]
) -> HTMLResponse:
    """A page's button: the API call, then the page again with the outcome on top (`done` of the API's answer,
    or the API's refusal with its status)."""
    try:
        answer = await action
    except ApiError as exc:
        return with_status(await show(outcome={"kind": "error", "text": exc.message}), exc.status)
    return await show(outcome={"kind": "ok", "text": done(answer)})


def error_field(exc: ApiError, default: str) -> str:
    """Where a form shows the API's refusal: the field it names, a taken name next to the name."""
    if exc.field:
        return exc.field
    return "name" if exc.code == "RESOURCE_ALREADY_EXISTS" else default


def parse_uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise HTTPException(status_code=404, detail="Not found") from None
