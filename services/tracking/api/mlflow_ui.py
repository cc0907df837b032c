"""MLflow's own web UI, served from the installed mlflow package (`mlflow/server/js/build`), unchanged.

`/` is the UI's page (signed-in browsers only; others go to /login) with a small Tessera box for the
project and signing out, `/project` chooses the project, `/static-files/...` are the UI's bundles. The
bundles' names carry a content hash, so they are cached for a year; every compressible file is sent
gzipped (compressed once per process, kept in memory: the main bundle is 4.4 MB, 1.2 MB gzipped).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import mimetypes
import re
import threading
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.tracking.domain import workspace
from services.tracking.domain.workspace import ProjectChoice
from shared.core.auth import Access, Principal
from shared.core.browser_session import (
    CSRF_FIELD,
    SESSION_COOKIE,
    check_cookie_request,
    cookie_project_hint,
    csrf_token,
    set_project_cookie,
    sign_in_redirect,
    signed_in,
)
from shared.core.errors import NotFound

router = APIRouter(tags=["mlflow-ui"], include_in_schema=False)


def build_dir() -> Path:
    spec = importlib.util.find_spec("mlflow")
    assert spec is not None and spec.submodule_search_locations, "mlflow is a dependency of Tessera"
    return Path(next(iter(spec.submodule_search_locations))) / "server" / "js" / "build"


BUILD_DIR = build_dir()
MLFLOW_VERSION = version("mlflow")

# webpack names bundles `<name>.<content hash>.<ext>`: such a file never changes under its name.
_HASHED = re.compile(r"\.[0-9a-f]{8,}\.")
_COMPRESSIBLE = (".js", ".css", ".html", ".json", ".svg", ".map", ".txt", ".ico", ".woff", ".ttf")
_IMMUTABLE = "public, max-age=31536000, immutable"
_REVALIDATE = "public, max-age=86400"


@dataclass(frozen=True)
class _Compressed:
    body: bytes
    etag: str


class _GzipCache:
    """Gzipped copies of the build's files, made on first request; the build is read-only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[Path, _Compressed] = {}

    def get(self, path: Path) -> _Compressed:
        found = self._files.get(path)
        if found is None:
            raw = path.read_bytes()
            found = _Compressed(gzip.compress(raw, compresslevel=6), f'"{hashlib.sha1(raw).hexdigest()}-gz"')
            with self._lock:
                self._files[path] = found
        return found


_gzip_cache = _GzipCache()


def _build_file(relative: str) -> Path:
    """A file of the build, never anything outside it."""
    candidate = (BUILD_DIR / relative).resolve()
    if not candidate.is_relative_to(BUILD_DIR.resolve()) or not candidate.is_file():
        raise NotFound(f"No UI file '{relative}'")
    return candidate


_INDEX_HTML = (BUILD_DIR / "index.html").read_text()
_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(["html"])
)
_NO_STORE = {"Cache-Control": "no-store"}


def _current_project(request: Request, principal: Principal) -> ProjectChoice | None:
    with request.app.state.db.session_scope() as session:
        access = Access(session, principal, project_hint=cookie_project_hint(request))
        return workspace.current_project(session, access)


@router.get("/")
async def index(request: Request) -> Response:
    """MLflow's page as its server sends it, with a small Tessera box (project, signed-in user, sign out)."""
    principal = await signed_in(request)
    if principal is None:
        return sign_in_redirect("/")
    project = await run_in_threadpool(_current_project, request, principal)
    bar = _templates.get_template("tessera_bar.html").render(
        project_label=project.label if project else "choose one",
        email=principal.email,
        csrf_field=CSRF_FIELD,
        csrf_token=csrf_token(request),
    )
    return HTMLResponse(_INDEX_HTML.replace("</body>", f"{bar}</body>", 1), headers=_NO_STORE)


def _project_choices(request: Request, principal: Principal) -> tuple[list[ProjectChoice], ProjectChoice | None]:
    with request.app.state.db.session_scope() as session:
        access = Access(session, principal, project_hint=cookie_project_hint(request))
        return workspace.visible_projects(session, access), workspace.current_project(session, access)


@router.get("/project")
async def project_page(request: Request) -> Response:
    principal = await signed_in(request)
    if principal is None:
        return sign_in_redirect("/project")
    projects, current = await run_in_threadpool(_project_choices, request, principal)
    html = _templates.get_template("project.html").render(
        projects=projects, current=current, csrf_field=CSRF_FIELD, csrf_token=csrf_token(request)
    )
    return HTMLResponse(html, headers=_NO_STORE)


@router.post("/project")
async def choose_project(request: Request) -> Response:
    principal = await signed_in(request)
    if principal is None or not request.cookies.get(SESSION_COOKIE):
        return sign_in_redirect("/project")
    await check_cookie_request(request, require_token=True)
    chosen = str((await request.form()).get("project_id") or "")
    projects, _current = await run_in_threadpool(_project_choices, request, principal)
    if chosen not in {str(project.id) for project in projects}:
        raise NotFound(f"Project '{chosen}' does not exist")
    response = RedirectResponse("/", status_code=303)
    set_project_cookie(response, request, chosen)
    return response


@router.get("/static-files/{relative:path}")
async def static_file(relative: str, request: Request) -> Response:
    """The UI's scripts, styles and images; public, as on MLflow's server (they hold no data)."""
    path = _build_file(relative)
    cache = _IMMUTABLE if _HASHED.search(path.name) else _REVALIDATE
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if path.suffix in _COMPRESSIBLE and "gzip" in request.headers.get("accept-encoding", ""):
        compressed = await run_in_threadpool(_gzip_cache.get, path)
        headers = {"Cache-Control": cache, "ETag": compressed.etag, "Vary": "Accept-Encoding"}
        if request.headers.get("if-none-match") == compressed.etag:
            return Response(status_code=304, headers=headers)
        return Response(compressed.body, media_type=media_type, headers={**headers, "Content-Encoding": "gzip"})
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": cache, "Vary": "Accept-Encoding"})


@router.get("/version")
def mlflow_version() -> Response:
    """The MLflow version whose API and UI Tessera serves (what MLflow's server answers here)."""
    return PlainTextResponse(MLFLOW_VERSION)
