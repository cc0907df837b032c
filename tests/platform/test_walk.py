"""The README's walk as a new user takes it: `tessera up`, `tessera seed`, then examples/walk.py (train with
the mlflow client -> register -> deploy -> predict through the gateway -> linked monitor -> drift check ->
alert -> signed webhook, its link followed back to the alert), on the embedded default and on PostgreSQL
with Redis. Stopping `tessera up` then leaves nothing running, the model server included."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.conftest import PG_SERVER, REDIS_URL, ROOT, _admin_engine, process_alive, wait_for
from tests.platform.test_up import _descendants, _free_port, embedded_env, healthy, start_up, stop_up

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from /proc")


@pytest.fixture
def postgres_and_redis() -> Iterator[dict[str, str]]:
    name = f"tessera_walk_{uuid.uuid4().hex[:10]}"
    engine = _admin_engine()
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield {
            "TESSERA_DATABASE_URL": PG_SERVER.set(database=name).render_as_string(hide_password=False),
            "TESSERA_BROKER_URL": REDIS_URL,
            "TESSERA_BROKER_KEY_PREFIX": f"{name}:",
        }
    finally:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.mark.parametrize("backend", ["embedded", "postgres_and_redis"])
def test_the_readme_walk_from_training_to_a_signed_webhook(backend, request, tmp_path):
    env = embedded_env(tmp_path)
    if backend == "postgres_and_redis":
        env |= request.getfixturevalue("postgres_and_redis")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "up.log").open("w")
    up = start_up(env, port, tmp_path, log)
    try:
        wait_for(lambda: healthy(base), 120, "/healthz")
        seeded = subprocess.run(
            [sys.executable, "-m", "tessera", "seed", "--json"], env=env, capture_output=True, text=True, timeout=60
        )
        assert seeded.returncode == 0, seeded.stderr
        facts = json.loads(seeded.stdout)
        assert facts["owner"] == {"email": "ada@example.com", "password": "tessera-demo"}
        # A seed run beside `tessera up` points at the port up serves on, not the default one.
        assert facts["sign_in"] == f"{base}/login"

        walk = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "walk.py")],
            env={**env, "TESSERA_URL": base, "TESSERA_API_KEY": facts["api_key"]},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert walk.returncode == 0, walk.stdout + walk.stderr + (tmp_path / "up.log").read_text()[-3000:]
        assert walk.stdout.strip().endswith("walk complete"), walk.stdout
        started = _descendants(up.pid)
        model_servers = [pid for pid in started if b"services.deployer.model_server" in _cmdline(pid)]
        assert model_servers, "the walk's deployment runs a model server"

        # SIGTERM, as a service manager stops it (test_up.py uses Ctrl-C's SIGINT).
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
        assert up.returncode == 0, (tmp_path / "up.log").read_text()[-3000:]
        assert [pid for pid in started if process_alive(pid)] == []
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    finally:
        stop_up(up)
        log.close()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""
