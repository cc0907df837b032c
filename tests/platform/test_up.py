"""The README's first command: `tessera up` on the embedded default (SQLite file, local artifacts,
a Celery worker and beat on the file-system broker), no PostgreSQL or Redis involved."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from /proc")
def test_up_serves_on_the_embedded_default_and_restarts_a_crashed_worker(tmp_path):
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("TESSERA_")}
    env["TESSERA_DATA_DIR"] = str(tmp_path / "data")
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen(
        [sys.executable, "-m", "tessera", "up", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).json()["status"] == "ok"
            except (httpx.HTTPError, ValueError, KeyError):
                return False

        wait_for(healthy, 90, "/healthz")
        health = httpx.get(f"{base}/healthz").json()
        assert health["status"] == "ok", health
        # Everything lives in the data dir: the SQLite file and the broker's folders.
        assert list((tmp_path / "data").glob("*.db")), list((tmp_path / "data").iterdir())

        def worker_pids() -> list[int]:
            return [pid for pid in _children(up.pid) if "celery" in _cmdline(pid) and " worker" in _cmdline(pid)]

        worker = wait_for(lambda: next(iter(worker_pids()), 0), 30, "the worker process")
        os.kill(worker, signal.SIGKILL)
        restarted = wait_for(lambda: next((pid for pid in worker_pids() if pid != worker), 0), 30, "a new worker")
        assert restarted != worker
        assert up.poll() is None, "tessera up must keep running when a child crashes"

        up.send_signal(signal.SIGINT)
        up.wait(timeout=40)
        output = (tmp_path / "up.log").read_text()
        assert up.returncode == 0, output
        assert "Tessera is running" in output
        assert f"http://127.0.0.1:{port}" in output
        assert "worker exited" in output and "restarting" in output
        # Nothing is written outside the data dir (kombu's file broker defaults to ./control).
        assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "up.log"]
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        log.close()
