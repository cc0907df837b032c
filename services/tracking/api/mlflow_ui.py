"""MLflow's own web UI, served from the installed mlflow package (`mlflow/server/js/build`), unchanged.

`/` is the UI's page (signed-in browsers only; others go to /login), `/static-files/...` its bundles. The
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
from fastapi.responses import FileResponse, PlainTextResponse, Response

from shared.core.browser_session import sign_in_redirect, signed_in
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


@router.get("/")
async def index(request: Request) -> Response:
    if await signed_in(request) is None:
        return sign_in_redirect("/")
    return FileResponse(BUILD_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


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
