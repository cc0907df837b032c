"""The README's first command: `tessera up` on the embedded default (SQLite file, local artifacts,
a Celery worker and beat on the file-system broker), no PostgreSQL or Redis involved."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.conftest import process_alive, wait_for
from tests.notifier.conftest import Receiver


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


@pytest.fixture
def webhook_receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def embedded_env(tmp_path: Path) -> dict[str, str]:
    """This environment without the test session's TESSERA_* and MLFLOW_* settings (a new user's shell): the
    embedded default, in tmp_path."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TESSERA_", "MLFLOW_"))}
    return env | {"TESSERA_DATA_DIR": str(tmp_path / "data"), "TESSERA_OUTBOUND_ALLOWLIST": '["127.0.0.1"]'}


def start_up(env: dict[str, str], port: int, cwd: Path, log: IO[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tessera", "up", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_up(up: subprocess.Popen) -> None:
    """However the test ended, `tessera up` is stopped as a service manager stops it; whatever survives is
    killed one by one (its children run in sessions of their own: killing its group would orphan them)."""
    if up.poll() is not None:
        return
    started = _descendants(up.pid)
    up.send_signal(signal.SIGTERM)
    try:
        up.wait(timeout=60)
    except subprocess.TimeoutExpired:
        for pid in [up.pid, *started]:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        up.wait()


def healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).json()["status"] == "ok"
    except (httpx.HTTPError, ValueError, KeyError):
        return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from /proc")
def test_up_serves_on_the_embedded_default_restarts_a_crashed_worker_and_delivers_alerts(tmp_path, webhook_receiver):
    port = _free_port()
    env = embedded_env(tmp_path)
    log = (tmp_path / "up.log").open("w")
    up = start_up(env, port, tmp_path, log)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: healthy(base), 90, "/healthz")
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
        _alert_reaches_a_webhook(base, env, webhook_receiver)
        _a_second_up_starts_nothing(tmp_path, env, port)
        descendants = _descendants(up.pid)

        up.send_signal(signal.SIGINT)
        up.wait(timeout=40)
        output = (tmp_path / "up.log").read_text()
        assert up.returncode == 0, output
        assert "Tessera is running" in output
        assert f"public URL (links in alerts and notifications): http://127.0.0.1:{port}" in output
        # Everything it started has stopped, down to the pool processes, and the port is free again.
        assert [pid for pid in descendants if process_alive(pid)] == []
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
        assert "worker exited" in output and "restarting" in output
        # Nothing is written outside the data dir (kombu's file broker defaults to ./control).
        assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "data-2", "up.log"]
    finally:
        stop_up(up)
        log.close()


def _descendants(pid: int) -> list[int]:
    found = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


def _a_second_up_starts_nothing(tmp_path: Path, env: dict[str, str], port: int) -> None:
    """On the busy port, or on the data folder in use: one line saying so, nothing started."""
    other_data = {**env, "TESSERA_DATA_DIR": str(tmp_path / "data-2")}
    for environment, arguments, reason in (
        (other_data, ["--port", str(port)], f"Cannot listen on 127.0.0.1:{port}"),
        (env, ["--port", str(_free_port())], "is in use by another `tessera up`"),
    ):
        second = subprocess.run(
            [sys.executable, "-m", "tessera", "up", *arguments],
            env=environment,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        lines = second.stdout.strip().splitlines() + second.stderr.strip().splitlines()
        assert len(lines) == 1 and reason in lines[0], lines
    assert not (tmp_path / "data-2" / "tessera.db").exists()


def _alert_reaches_a_webhook(base: str, env: dict[str, str], receiver: Receiver) -> None:
    """An alert posted as Prometheus posts it travels outbox -> file-system broker -> the (restarted)
    worker -> a signed webhook, with nothing but the embedded default."""

    def cli(*arguments: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "tessera", *arguments], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    cli("user", "create", "--email", "ops@example.com", "--password", "correct-horse", "--org", "ops")
    key = json.loads(cli("api-key", "create", "--email", "ops@example.com", "--scopes", "admin", "--json"))["key"]
    headers = {"Authorization": f"Bearer {key}"}
    channel = httpx.post(
        f"{base}/api/v1/channels",
        json={"name": "hook", "type": "webhook", "url": receiver.url()},
        headers=headers,
    )
    assert channel.status_code == 201, channel.text
    rule = {"name": "all", "channel_ids": [channel.json()["id"]], "group_wait_s": 0}
    assert httpx.post(f"{base}/api/v1/rules", json=rule, headers=headers).status_code == 201
    alert = [{"labels": {"alertname": "HighLatency", "severity": "critical"}}]
    assert httpx.post(f"{base}/api/v2/alerts", json=alert, headers=headers).status_code == 200
    wait_for(lambda: receiver.requests, 60, "the webhook delivery")
    [request] = receiver.requests
    assert request.headers["webhook-signature"].startswith("v1,")
    delivered = json.loads(request.body)
    assert delivered["alerts"][0]["labels"]["alertname"] == "HighLatency"
    # The link leads back to the port Tessera serves on (no TESSERA_PUBLIC_URL set), to the alert.
    assert delivered["link"].startswith(f"{base}/")
    followed = httpx.get(delivered["link"], headers=headers)
    assert followed.status_code == 200, followed.text
    assert followed.json()["payload"]["alerts"][0]["labels"]["alertname"] == "HighLatency"
