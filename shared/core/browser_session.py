"""Browser sign-in: the /login page, POST /logout, the session cookie and its CSRF protection.

A signed-in browser carries an HttpOnly `tessera_session` cookie naming a row of `browser_sessions`; the
auth dependency (deps.py) accepts it exactly like a bearer token, so a browser has its user's roles and
tenancy and nothing more. A cookie is sent by the browser on its own, so every state-changing request it
authenticates must prove it comes from Tessera's own pages:

- same origin: `Origin` names this host, or `Sec-Fetch-Site` says same-origin (a request with neither
  is refused: every browser that keeps cookies sends one of them);
- HTML form posts (and any other form-encoded body) also echo the `tessera_csrf` cookie as the form
  field `csrf_token` or the `X-CSRF-Token` header (double submit): a form is the one request another
  site can make without a preflight;
- `text/plain` bodies are refused, as MLflow's server refuses them (a cross-site form can send them).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import case, delete, select, update
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from shared.core import audit
from shared.core.auth import SESSION_SCHEME, Principal
from shared.core.errors import InvalidParameter, PermissionDenied, Unauthenticated
from shared.core.security import digest_session_token, hash_password, new_session_token, verify_password
from shared.core.settings import Settings
from shared.db.dialect import upsert_insert
from shared.db.models import BrowserSession, SignInAttempts, User
from shared.db.session import Database

SESSION_COOKIE = "tessera_session"
CSRF_COOKIE = "tessera_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
# The project a signed-in browser works in (chosen at /project): where MLflow calls that name no project go,
# as the X-Tessera-Project header says for API clients. A preference, not a permission: every use of it is
# checked against the user's roles.
PROJECT_COOKIE = "tessera_project"

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(["html"])
)


# --- sessions -----------------------------------------------------------------------------------


def start_session(session: Session, user: User, ttl_s: int) -> tuple[str, datetime]:
    """A new session for `user`: its token (for the cookie, never stored) and expiry. Flushes."""
    token = new_session_token()
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl_s)
    session.add(BrowserSession(user_id=user.id, token_hash=digest_session_token(token), expires_at=expires_at))
    # Expired sessions of this user go with each new one, so the table does not grow without bound.
    session.execute(
        delete(BrowserSession).where(BrowserSession.user_id == user.id, BrowserSession.expires_at <= datetime.now(UTC))
    )
    session.flush()
    return token, expires_at


def end_session(session: Session, token: str) -> None:
    session.execute(delete(BrowserSession).where(BrowserSession.token_hash == digest_session_token(token)))


async def signed_in(request: Request) -> Principal | None:
    """The caller of a page request (session cookie or Authorization header), or None: pages send those who
    are not signed in to /login instead of answering 401."""
    cookie = request.cookies.get(SESSION_COOKIE)
    authorization = request.headers.get("authorization") or (f"{SESSION_SCHEME} {cookie}" if cookie else None)
    if not authorization:
        return None
    authenticator = request.app.state.authenticator
    principal = authenticator.cached(authorization)
    if principal is not None:
        return principal

    def look_up() -> Principal | None:
        with request.app.state.db.session_scope() as session:
            try:
                return authenticator.authenticate(session, authorization)
            except Unauthenticated:
                return None

    return await run_in_threadpool(look_up)


def cookie_project_hint(request: Request) -> str | None:
    """The browser's chosen project, for requests its session cookie authenticates."""
    if request.headers.get("authorization") or not request.cookies.get(SESSION_COOKIE):
        return None
    return request.cookies.get(PROJECT_COOKIE)


def set_project_cookie(response: Response, request: Request, project_id: str) -> None:
    settings: Settings = request.app.state.settings
    response.set_cookie(
        PROJECT_COOKIE,
        project_id,
        httponly=True,
        samesite="lax",
        secure=_is_https(request, settings),
        max_age=365 * 86400,
        path="/",
    )


def csrf_token(request: Request) -> str:
    """The token a page embeds in its forms (the `tessera_csrf` cookie's value)."""
    return request.cookies.get(CSRF_COOKIE) or ""


def sign_in_redirect(next_url: str = "/") -> RedirectResponse:
    return RedirectResponse(f"/login?{urlencode({'next': next_url})}", status_code=302)


# --- CSRF ---------------------------------------------------------------------------------------


def _same_origin(request: Request, settings: Settings) -> bool:
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is not None:
        netloc = urlsplit(origin).netloc
        return bool(netloc) and netloc in {request.headers.get("host"), urlsplit(settings.public_url).netloc}
    return site is not None


async def check_cookie_request(request: Request, *, require_token: bool = False) -> None:
    """Refuses a state-changing request authenticated by the session cookie unless it passes the checks in
    this module's docstring. Safe methods pass: they change nothing. Endpoints of HTML forms pass
    `require_token`: their token is checked whatever the body's type."""
    if request.method in SAFE_METHODS:
        return
    if not _same_origin(request, request.app.state.settings):
        raise PermissionDenied("Cross-origin request blocked")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "text/plain":
        raise InvalidParameter("text/plain request bodies are not accepted; send application/json")
    if require_token or content_type in _FORM_TYPES:
        expected = request.cookies.get(CSRF_COOKIE)
        sent: str | UploadFile | None = request.headers.get(CSRF_HEADER)
        if sent is None and content_type in _FORM_TYPES:
            sent = (await request.form()).get(CSRF_FIELD)
        if not expected or not isinstance(sent, str) or not secrets.compare_digest(expected, sent):
            raise PermissionDenied("Missing or wrong CSRF token; reload the page and try again")


# --- login attempts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SignInLimit:
    """At most `max_attempts` failed sign-ins per email and per client address in a window of `window_s`
    seconds, counted in the database so that every worker and host serving /login shares one count."""

    max_attempts: int
    window_s: int

    def begin(self, db: Database, keys: list[str]) -> float:
        """Count one attempt for each key; the seconds to wait before trying again if a key is over its
        limit (the attempt is then not made), else 0. Counting comes first and is one atomic upsert per
        key, so parallel guesses each take a place in the count before any password is checked."""
        now = datetime.now(UTC)
        window_ends_at = now + timedelta(seconds=self.window_s)
        table = SignInAttempts.__table__
        with db.session_scope() as session:
            session.execute(delete(SignInAttempts).where(SignInAttempts.window_ends_at < now - _EXPIRED_KEPT))
            waits = []
            for key in keys:
                insert = upsert_insert(session, table).values(key=key, attempts=1, window_ends_at=window_ends_at)
                statement = insert.on_conflict_do_update(
                    index_elements=[table.c.key],
                    set_={
                        "attempts": case((table.c.window_ends_at <= now, 1), else_=table.c.attempts + 1),
                        "window_ends_at": case(
                            (table.c.window_ends_at <= now, window_ends_at), else_=table.c.window_ends_at
                        ),
                    },
                ).returning(table.c.attempts, table.c.window_ends_at)
                attempts, ends_at = session.execute(statement).one()
                if attempts > self.max_attempts:
                    waits.append((ends_at - now).total_seconds())
            if waits:
                # A refused attempt is not made, so it does not extend anyone's count.
                session.execute(
                    update(SignInAttempts)
                    .where(SignInAttempts.key.in_(keys))
                    .values(attempts=SignInAttempts.attempts - 1)
                )
        return max(waits, default=0.0)

    def succeeded(self, db: Database, email_key: str, other_keys: list[str]) -> None:
        """A right password clears the email's count and takes this attempt back from the others."""
        with db.session_scope() as session:
            session.execute(delete(SignInAttempts).where(SignInAttempts.key == email_key))
            session.execute(
                update(SignInAttempts)
                .where(SignInAttempts.key.in_(other_keys), SignInAttempts.attempts > 0)
                .values(attempts=SignInAttempts.attempts - 1)
            )


# Rows of windows that ended are swept once they are this old (a window that ended is reset in place).
_EXPIRED_KEPT = timedelta(hours=1)

# Verified when the email is unknown, so that a wrong email takes as long as a wrong password.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def _check_password(session: Session, email: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.email == email))
    if user is None or not user.password_hash:
        verify_password(_DUMMY_HASH, password)
        return None
    if not verify_password(user.password_hash, password) or not user.is_active or user.deleted_at is not None:
        return None
    return user


def _sign_in(db: Database, email: str, password: str, ttl_s: int) -> tuple[str, datetime] | None:
    """A new session's token and expiry, or None for a wrong email or password; audited either way."""
    with db.session_scope() as session:
        user = _check_password(session, email, password)
        if user is None:
            audit.describe(session, action="session.login_failed", object_type="user", details={"email": email})
            audit.record(
                session,
                principal=None,
                outcome="failure",
                status_code=401,
                description=audit.described(session),
                error_code="UNAUTHENTICATED",
            )
            return None
        token, expires_at = start_session(session, user, ttl_s)
        audit.describe(session, action="session.login", object_type="user", object_id=user.id)
        audit.record(session, principal=None, outcome="success", status_code=303, description=audit.described(session))
        return token, expires_at


def _sign_out(db: Database, token: str) -> None:
    with db.session_scope() as session:
        end_session(session, token)


# --- pages --------------------------------------------------------------------------------------


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (no `//host` or `https://host`)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


def _is_https(request: Request, settings: Settings) -> bool:
    return request.url.scheme == "https" or settings.public_url.startswith("https://")


def _csrf_token(request: Request) -> str:
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)


def _set_csrf_cookie(response: Response, request: Request, token: str, settings: Settings) -> None:
    # Readable by the page's scripts (they echo it in X-CSRF-Token), unlike the session cookie.
    response.set_cookie(
        CSRF_COOKIE, token, httponly=False, samesite="lax", secure=_is_https(request, settings), path="/"
    )


def _login_page(
    request: Request, *, next_url: str, email: str = "", error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    token = _csrf_token(request)
    html = templates.get_template("login.html").render(
        next_url=next_url, email=email, error=error, csrf_field=CSRF_FIELD, csrf_token=token
    )
    response = HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})
    _set_csrf_cookie(response, request, token, settings)
    return response


router = APIRouter(tags=["browser sign-in"], include_in_schema=False)


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    return _login_page(request, next_url=safe_next(next))


@router.post("/login")
async def login(request: Request) -> Response:
    """Email and password from the form; on success the session cookie and a redirect to `next`."""
    settings: Settings = request.app.state.settings
    form = await request.form()
    email = str(form.get("email") or "").strip().lower()
    password = str(form.get("password") or "")
    next_url = safe_next(str(form.get("next") or ""))
    try:
        await check_cookie_request(request, require_token=True)
    except PermissionDenied:
        return _login_page(
            request,
            next_url=next_url,
            email=email,
            status_code=403,
            error="This sign-in form has expired; please try again.",
        )
    client = request.client.host if request.client else "unknown"
    email_key, client_key = f"email:{email}", f"ip:{client}"
    limit = SignInLimit(settings.login_max_failures, settings.login_failure_window_s)
    db: Database = request.app.state.db
    wait = await run_in_threadpool(limit.begin, db, [email_key, client_key])
    if wait > 0:
        minutes = max(1, round(wait / 60))
        refused = _login_page(
            request,
            next_url=next_url,
            email=email,
            status_code=429,
            error=f"Too many failed sign-in attempts. Try again in {minutes} minute(s).",
        )
        refused.headers["Retry-After"] = str(max(1, round(wait)))
        return refused
    signed_in = await run_in_threadpool(_sign_in, db, email, password, settings.session_ttl_s)
    if signed_in is None:
        return _login_page(request, next_url=next_url, email=email, status_code=401, error="Wrong email or password.")
    await run_in_threadpool(limit.succeeded, db, email_key, [client_key])
    token, expires_at = signed_in
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=_is_https(request, settings),
        expires=expires_at,
        path="/",
    )
    # A fresh CSRF token with each session: one read before signing in is worth nothing after.
    _set_csrf_cookie(response, request, secrets.token_urlsafe(32), settings)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Ends the session (its row is deleted, so the cookie stops working everywhere) and clears the cookie."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await check_cookie_request(request, require_token=True)
        await run_in_threadpool(_sign_out, request.app.state.db, token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
