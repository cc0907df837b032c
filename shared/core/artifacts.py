"""The artifact store: files under one root, on a local folder (default) or S3-compatible storage.

`TESSERA_ARTIFACT_ROOT` is a folder path, or `s3://bucket/prefix` (credentials from the usual AWS
environment; `TESSERA_ARTIFACT_S3_ENDPOINT_URL` for MinIO and other S3-compatible servers). Both go
through fsspec, so every service (tracking, registry, monitor) gets the same behaviour.

Keys are relative POSIX paths. `safe_key` is the only way in: it rejects absolute paths, `.`/`..`
segments, backslashes, NUL and empty segments, so no key can ever name anything outside the root.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, BinaryIO

import fsspec

from shared.core.errors import InvalidParameter, NotFound
from shared.core.settings import Settings

CHUNK_SIZE = 1024 * 1024


@dataclass(frozen=True)
class ArtifactEntry:
    name: str  # the last path segment
    is_dir: bool
    size: int | None


def safe_key(*parts: str) -> str:
    """Join path parts into a key, refusing anything that could escape the root."""
    segments: list[str] = []
    for part in parts:
        if not part:
            continue
        if "\\" in part or "\x00" in part:
            raise InvalidParameter(f"Invalid artifact path '{part}'")
        if part.startswith("/") and segments:
            raise InvalidParameter(f"Invalid artifact path '{part}': absolute paths are not allowed")
        for segment in part.strip("/").split("/"):
            if segment in ("", ".", ".."):
                raise InvalidParameter(f"Invalid artifact path '{part}': empty, '.' or '..' segments")
            segments.append(segment)
    if not segments:
        raise InvalidParameter("Invalid artifact path: empty")
    return "/".join(segments)


class ArtifactStore:
    def __init__(self, root: str, *, s3_endpoint_url: str = "") -> None:
        if root.startswith("s3://"):
            options: dict[str, Any] = {"use_listings_cache": False}
            if s3_endpoint_url:
                options["client_kwargs"] = {"endpoint_url": s3_endpoint_url}
            self.fs = fsspec.filesystem("s3", **options)
            self.root = root.removeprefix("s3://").rstrip("/")
            self.is_local = False
        else:
            self.fs = fsspec.filesystem("file")
            self.root = self.fs._strip_protocol(root).rstrip("/")
            self.is_local = True

    def _path(self, key: str) -> str:
        return posixpath.join(self.root, safe_key(key))

    def open_write(self, key: str) -> BinaryIO:
        """A writable handle for the file at `key` (folders are created as needed)."""
        path = self._path(key)
        if self.is_local:
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            if self.fs.isdir(path):
                raise InvalidParameter(f"Artifact path '{key}' is a folder")
        return self.fs.open(path, "wb")

    def write(self, key: str, chunks: Iterable[bytes]) -> int:
        """Write a file from chunks (streamed: never held in memory whole); returns its size."""
        size = 0
        with self.open_write(key) as handle:
            for chunk in chunks:
                handle.write(chunk)
                size += len(chunk)
        return size

    def is_file(self, key: str) -> bool:
        return self.fs.isfile(self._path(key))

    def size(self, key: str) -> int:
        return int(self.fs.size(self._path(key)))

    def read(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        path = self._path(key)
        if not self.fs.isfile(path):
            raise NotFound(f"Artifact '{key}' does not exist")

        def chunks() -> Iterator[bytes]:
            with self.fs.open(path, "rb") as handle:
                while chunk := handle.read(chunk_size):
                    yield chunk

        return chunks()

    def open_read(self, key: str) -> BinaryIO:
        """A seekable handle for random access (ranged GETs on S3), e.g. a Parquet footer and some row groups."""
        try:
            return self.fs.open(self._path(key), "rb")
        except FileNotFoundError:
            raise NotFound(f"Artifact '{key}' does not exist") from None

    def find(self, prefix: str) -> list[str]:
        """Keys of every file below `prefix`, in one recursive listing (a single paginated LIST on S3)."""
        root = self._path(prefix)
        if not self.fs.exists(root):
            return []
        return [posixpath.join(safe_key(prefix), posixpath.relpath(path, root)) for path in self.fs.find(root)]

    def list(self, key: str) -> list[ArtifactEntry]:
        """Direct children of a folder; empty for a file or a missing path (as MLflow answers)."""
        path = self._path(key)
        if not self.fs.isdir(path):
            return []
        entries = []
        for info in self.fs.ls(path, detail=True):
            name = posixpath.basename(info["name"].rstrip("/"))
            is_dir = info["type"] == "directory"
            entries.append(ArtifactEntry(name, is_dir, None if is_dir else int(info.get("size") or 0)))
        return sorted(entries, key=lambda e: e.name)

    def delete(self, key: str) -> None:
        path = self._path(key)
        if not self.fs.exists(path):
            raise NotFound(f"Artifact '{key}' does not exist")
        self.fs.rm(path, recursive=True)


@lru_cache(maxsize=4)
def _store(root: str, s3_endpoint_url: str) -> ArtifactStore:
    return ArtifactStore(root, s3_endpoint_url=s3_endpoint_url)


def get_artifact_store(settings: Settings) -> ArtifactStore:
    return _store(settings.artifact_root, settings.artifact_s3_endpoint_url)
