"""Administration: API keys (create with scopes, project and expiry — the key shown once; list; revoke),
the organization's members and roles, and the audit log with its filters."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter

from shared.core.auth import SCOPES
from tessera.console.api import ApiError
from tessera.console.web import PAGE_SIZE, Console, ConsoleDep, act_then_show, parse_uuid, with_status

router = APIRouter()
EXPIRIES = {"": None, "1d": 86400, "30d": 30 * 86400, "90d": 90 * 86400, "365d": 365 * 86400}
ROLES = ("viewer", "member", "admin", "owner")


# --- API keys ------------------------------------------------------------------------------------


async def _keys_page(c: Console, page_token: str | None):
    # Admins see every key of the organization; everyone else their own.
    path = f"/api/v1/orgs/{c.org['id']}/api-keys" if c.org_admin else "/api/v1/api-keys"
    params = {} if c.org_admin else {"organization_id": str(c.org["id"])}
    return await c.api.page(path, page_token=page_token, max_results=PAGE_SIZE, **params)


@router.get("/api-keys")
async def api_keys(c: ConsoleDep, page_token: str | None = None, fragment: str | None = None):
    return await _keys(c, page_token, fragment)


async def _keys(
    c: Console,
    page_token: str | None = None,
    fragment: str | None = None,
    created: dict | None = None,
    errors: dict | None = None,
    values: dict | None = None,
    outcome: dict | None = None,
):
    page = await _keys_page(c, page_token) if c.org else None
    template = "admin/key_rows.html" if fragment == "rows" else "admin/api_keys.html"
    return c.render(
        template,
        section="api-keys",
        page=page,
        created=created,
        errors=errors or {},
        outcome=outcome,
        values=values or {"scopes": []},
        scopes=sorted(SCOPES),
        expiries=EXPIRIES,
    )


@router.post("/api-keys")
async def create_api_key(c: ConsoleDep):
    form = await c.request.form()
    values = {
        "name": str(form.get("name") or "").strip(),
        "scopes": [str(s) for s in form.getlist("scopes")],
        "project_id": str(form.get("project_id") or ""),
        "expiry": str(form.get("expiry") or ""),
    }
    body = {
        "name": values["name"],
        "organization_id": str(c.org["id"]) if c.org else None,
        "scopes": values["scopes"],
        "project_id": values["project_id"] or None,
        "ttl_seconds": EXPIRIES.get(values["expiry"]),
    }
    try:
        created = await c.api.post("/api/v1/api-keys", body)
    except ApiError as exc:
        return with_status(await _keys(c, errors={exc.field or "form": exc.message}, values=values), exc.status)
    return await _keys(c, created=created)


@router.post("/api-keys/{key_id}/revoke")
async def revoke_api_key(c: ConsoleDep, key_id: str):
    revoked = c.api.delete(f"/api/v1/api-keys/{parse_uuid(key_id)}")
    return await act_then_show(revoked, partial(_keys, c), lambda key: f"Key {key['name']} revoked")


# --- members -------------------------------------------------------------------------------------
# The organization's members, and — when a project is chosen — that project's explicit roles. Each form
# names its scope ("org" or "project"), so one set of routes serves both tables.

PROJECT_ROLES = ("viewer", "member", "admin")


def _members_path(c: Console, scope: str) -> str:
    if scope == "project" and c.project is not None:
        return f"/api/v1/projects/{c.project['id']}/members"
    return f"/api/v1/orgs/{c.org['id']}/members"


@router.get("/members")
async def members(c: ConsoleDep, page_token: str | None = None, fragment: str | None = None):
    return await _members(c, page_token, fragment)


async def _members(
    c: Console,
    page_token: str | None = None,
    fragment: str | None = None,
    errors: dict | None = None,
    outcome: dict | None = None,
):
    page = await c.api.page(_members_path(c, "org"), page_token=page_token, max_results=PAGE_SIZE)
    project_page = None
    if c.project is not None and fragment != "rows":
        project_page = await c.api.page(_members_path(c, "project"), max_results=200)
    template = "admin/member_rows.html" if fragment == "rows" else "admin/members.html"
    return c.render(
        template,
        section="members",
        page=page,
        project_page=project_page,
        roles=ROLES,
        project_roles=PROJECT_ROLES,
        errors=errors or {},
        outcome=outcome,
        can_manage_project=c.project is not None and c.project_role(c.project["id"]) == "admin",
    )


async def _member_change(c: Console, change, done: str):
    try:
        await change
    except ApiError as exc:
        return with_status(
            await _members(
                c, errors={exc.field or "form": exc.message}, outcome={"kind": "error", "text": exc.message}
            ),
            exc.status,
        )
    return await _members(c, outcome={"kind": "ok", "text": done})


async def _form(c: Console) -> tuple[str, dict]:
    form = await c.request.form()
    return _members_path(c, str(form.get("scope") or "org")), {k: str(v).strip() for k, v in form.items()}


@router.post("/members")
async def add_member(c: ConsoleDep):
    path, form = await _form(c)
    email, role = form.get("email", ""), form.get("role") or "member"
    return await _member_change(c, c.api.post(path, {"email": email, "role": role}), f"{email} added as {role}")


@router.post("/members/{user_id}/role")
async def change_role(c: ConsoleDep, user_id: str):
    path, form = await _form(c)
    role = form.get("role", "")
    change = c.api.patch(f"{path}/{parse_uuid(user_id)}", {"role": role})
    return await _member_change(c, change, f"Role changed to {role}")


@router.post("/members/{user_id}/remove")
async def remove_member(c: ConsoleDep, user_id: str):
    path, _ = await _form(c)
    return await _member_change(c, c.api.delete(f"{path}/{parse_uuid(user_id)}"), "Member removed")


# --- audit log -----------------------------------------------------------------------------------

AUDIT_FILTERS = ("actor", "action", "object_type", "outcome", "since", "until")


@router.get("/audit")
async def audit_log(c: ConsoleDep, page_token: str | None = None, fragment: str | None = None):
    filters = {name: c.request.query_params.get(name, "") for name in AUDIT_FILTERS}
    # The browser's datetime-local fields carry no zone; the console shows UTC, so they mean UTC.
    query = {k: f"{v}:00+00:00" if k in ("since", "until") and len(v) == 16 else v for k, v in filters.items()}
    error = None
    page = None
    try:
        page = await c.api.page(
            f"/api/v1/orgs/{c.org['id']}/audit-logs", page_token=page_token, max_results=PAGE_SIZE, **query
        )
    except ApiError as exc:
        if exc.status == 404:
            raise
        error = exc
    template = "admin/audit_rows.html" if fragment == "rows" else "admin/audit.html"
    return c.render(
        template, section="audit", page=page, filters=filters, error=error, status_code=error.status if error else 200
    )
