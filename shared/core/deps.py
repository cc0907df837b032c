"""Request dependencies: one session and one commit per request, the caller, their access, the audit row.

Polar's habit: the request's session commits once, after the handler and before the response, and a
failed request rolls everything back — including the events it queued (they are rows in the same
transaction). Every non-GET request leaves exactly one audit row, success or failure.

The dependencies are async and hand only I/O to the thread pool: a sync dependency costs a thread-pool
round trip each, and a request used to make five of them. Opening a session does no I/O (it connects at
its first statement) and a remembered caller needs none either, so a request now makes two: its handler,
and the commit with the audit row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from shared.core import audit, integrity
from shared.core.auth import SESSION_SCHEME, Access, Principal
from shared.core.browser_session import SESSION_COOKIE, check_cookie_request, cookie_project_hint
from shared.core.errors import TesseraError
from shared.core.settings import Settings
from shared.db.session import Database

_READ_METHODS = {"GET", "HEAD", "OPTIONS"}
_PRINCIPAL = "tessera_principal"


async def _session(request: Request) -> AsyncIterator[Session]:
    db: Database = request.app.state.db
    session = db.sessionmaker()
    try:
        yield session
    except BaseException as exc:
        await run_in_threadpool(_roll_back, db, request, session, exc)
        raise
    await run_in_threadpool(_commit, request, session)


def _commit(request: Request, session: Session) -> None:
    try:
        if request.method not in _READ_METHODS:
            audit.record(
                session,
                principal=getattr(request.state, _PRINCIPAL, None),
                outcome="success",
                # The route's declared status (201 for creates); handlers here return bodies, not Responses.
                status_code=getattr(request.scope.get("route"), "status_code", None) or 200,
                description=audit.described(session),
            )
        session.commit()
    except BaseException as exc:
        _roll_back(request.app.state.db, request, session, exc)
        raise
    finally:
        session.close()


def _roll_back(db: Database, request: Request, session: Session, exc: BaseException) -> None:
    try:
        session.rollback()
        if request.method not in _READ_METHODS:
            _record_failure(db, request, session, exc)
    finally:
        session.close()


def _record_failure(db: Database, request: Request, failed: Session, exc: BaseException) -> None:
    if isinstance(exc, TesseraError):
        status, code = exc.status_code, exc.code
    elif isinstance(exc, RequestValidationError):
        status, code = 422, "INVALID_PARAMETER_VALUE"
    elif isinstance(exc, DataError):
        status, code = 400, "INVALID_PARAMETER_VALUE"
    elif isinstance(exc, IntegrityError):
        error = integrity.error_for(exc)
        status, code = error.status_code, error.code
    else:
        status, code = getattr(exc, "status_code", 500), "INTERNAL_ERROR"
    with db.session_scope() as session:
        audit.record(
            session,
            principal=getattr(request.state, _PRINCIPAL, None),
            outcome="failure",
            status_code=status,
            description=audit.described(failed),
            error_code=code,
        )


async def _credentials(request: Request) -> str | None:
    """The Authorization header, else the browser's session cookie as a pseudo-header; a request the cookie
    authenticates must first pass the CSRF checks (shared/core/browser_session.py)."""
    authorization = request.headers.get("authorization")
    if authorization:
        return authorization
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    await check_cookie_request(request)
    return f"{SESSION_SCHEME} {cookie}"


async def _principal(request: Request, session: Annotated[Session, Depends(_session, scope="function")]) -> Principal:
    authenticator = request.app.state.authenticator
    authorization = await _credentials(request)
    principal = authenticator.cached(authorization)
    if principal is None:
        principal = await run_in_threadpool(authenticator.authenticate, session, authorization)
    setattr(request.state, _PRINCIPAL, principal)
    return principal


async def _optional_principal(
    request: Request, session: Annotated[Session, Depends(_session, scope="function")]
) -> Principal | None:
    """The caller if they sent credentials (bad credentials still fail), else None: for open routes such as
    sign-up that behave differently for an authenticated admin."""
    if not request.headers.get("authorization") and not request.cookies.get(SESSION_COOKIE):
        return None
    return await _principal(request, session)


async def _access(
    request: Request,
    session: Annotated[Session, Depends(_session, scope="function")],
    principal: Annotated[Principal, Depends(_principal)],
) -> Access:
    hint = request.headers.get("x-tessera-project") or cookie_project_hint(request)
    return Access(session, principal, project_hint=hint)


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


SessionDep = Annotated[Session, Depends(_session, scope="function")]
PrincipalDep = Annotated[Principal, Depends(_principal)]
OptionalPrincipalDep = Annotated[Principal | None, Depends(_optional_principal)]
AccessDep = Annotated[Access, Depends(_access)]
SettingsDep = Annotated[Settings, Depends(_settings)]

# Query parameters every paginated list takes (see shared.core.pagination).
PageToken = Annotated[
    str | None, Query(max_length=512, pattern=r"^[A-Za-z0-9_-]*$", description="next_page_token of the previous page")
]
MaxResults = Annotated[int, Query(ge=1, le=500, description="Page size (at most 500)")]
