"""Shared fixtures: a fresh PostgreSQL database per test session, migrated with Alembic; Redis with a
per-session key prefix; a rolled-back transaction per test; a live server and a real Celery worker.

Configuration reaches the code only through TESSERA_* settings, set here before anything imports them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
SESSION_ID = uuid.uuid4().hex[:10]
PG_SERVER = make_url(os.environ.get("TESSERA_TEST_PG_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432"))
REDIS_URL = os.environ.get("TESSERA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_DB_NAME = f"tessera_test_{SESSION_ID}"
DATA_DIR = Path(tempfile.mkdtemp(prefix=f"tessera-test-{SESSION_ID}-"))

os.environ.update(
    {
        "TESSERA_DATABASE_URL": PG_SERVER.set(database=TEST_DB_NAME).render_as_string(hide_password=False),
        "TESSERA_BROKER_URL": REDIS_URL,
        "TESSERA_BROKER_KEY_PREFIX": f"tessera-test-{SESSION_ID}:",
        "TESSERA_DATA_DIR": str(DATA_DIR),
        "TESSERA_ARTIFACT_ROOT": str(DATA_DIR / "artifacts"),
        "TESSERA_OUTBOUND_ALLOWLIST": '["127.0.0.1", "::1", "localhost"]',
        "TESSERA_LOG_LEVEL": "WARNING",
    }
)

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from shared.core.settings import Settings  # noqa: E402
from shared.db.session import Database, get_database  # noqa: E402

# The platform's Celery app: tasks called in-process (and the sends of code under test) use it.
from tessera import worker  # noqa: E402, F401
from tests import factories  # noqa: E402


def _admin_engine():
    return create_engine(PG_SERVER.set(database="postgres"), isolation_level="AUTOCOMMIT")


def pytest_configure(config):
    engine = _admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{TEST_DB_NAME}"'))
    engine.dispose()
    from shared.db.migrate import upgrade

    upgrade(os.environ["TESSERA_DATABASE_URL"])


def pytest_unconfigure(config):
    get_database.cache_clear()
    engine = _admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{TEST_DB_NAME}" WITH (FORCE)'))
    engine.dispose()
    _stop_model_servers_of_this_session()
    shutil.rmtree(DATA_DIR, ignore_errors=True)


def _stop_model_servers_of_this_session() -> None:
    """Model servers run in sessions of their own (to outlive a worker restart); one whose test failed
    before stopping its deployment would outlive the test run, so those serving this session's artifacts
    stop with it."""
    marker = str(DATA_DIR).encode()
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes() if proc.name.isdigit() else b""
        except OSError:  # gone meanwhile
            continue
        if b"services.deployer.model_server" in cmdline and marker in cmdline:
            with suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGTERM)


def process_alive(pid: int) -> bool:
    """Running, not a zombie: a process that has exited but whose parent has not reaped it yet has stopped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def db(settings) -> Database:
    """The real test database; what is committed through it stays for the whole session."""
    return get_database(settings.database_url)


class _TransactionalDatabase(Database):
    """A Database whose sessions live inside one outer transaction that the test rolls back."""

    def __init__(self, connection, url: str):
        self.url = url
        self.engine = connection.engine
        self.sessionmaker = sessionmaker(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )


def in_test_transaction(application, db_session: Session):
    """The app with its every request inside the test's rolled-back transaction."""
    application.state.db = db_session.info["tx_db"]
    # No hot pool: its own connections would not see the test's transaction, and its identity refresh
    # would use the transaction's one connection from another thread.
    application.state.hot_pool = None
    return application


@pytest.fixture
def db_session(db) -> Iterator[Session]:
    connection = db.engine.connect()
    outer = connection.begin()
    tx_db = _TransactionalDatabase(connection, db.url)
    session = tx_db.sessionmaker()
    session.info["tx_db"] = tx_db
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()


@pytest.fixture
def app(settings, db_session):
    """The platform app, its every request inside the test's rolled-back transaction."""
    from tessera.platform import create_app

    return in_test_transaction(create_app(settings), db_session)


@pytest.fixture
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def tenant(db_session, settings) -> factories.Tenant:
    return factories.make_tenant(db_session, jwt_secret=settings.jwt_secret)


@pytest.fixture
def other_tenant(db_session, settings) -> factories.Tenant:
    return factories.make_tenant(db_session, jwt_secret=settings.jwt_secret)


# --- Real servers, for the mlflow client, workers and end-to-end tests (data is committed) ---------


class LiveServer:
    def __init__(self, url: str, settings: Settings):
        self.url = url
        self.settings = settings


@contextmanager
def serving(settings: Settings) -> Iterator[LiveServer]:
    """The platform app on `settings` (its own database), served by uvicorn on a random port."""
    import uvicorn

    from tessera.platform import create_app

    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("live server did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", settings)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(settings) -> Iterator[LiveServer]:
    with serving(settings) as server:
        yield server


@pytest.fixture
def live_tenant(db, settings) -> factories.Tenant:
    """A tenant committed to the database, for tests that go through real servers and workers."""
    with db.session_scope() as session:
        return factories.make_tenant(session, jwt_secret=settings.jwt_secret)


def start_worker(*, queues: str | None = None, concurrency: int = 2, extra_env: dict | None = None):
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tessera.worker:celery_app",
        "worker",
        "--loglevel=WARNING",
        f"--concurrency={concurrency}",
        "--without-gossip",
        "--without-mingle",
        "--hostname",
        f"test-{uuid.uuid4().hex[:6]}@%h",
    ]
    if queues:
        cmd += ["-Q", queues]
    env = {**os.environ, **(extra_env or {})}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)


def wait_for(predicate: Callable[[], object], timeout: float = 40.0, what: str = "condition", every: float = 0.1):
    """The predicate's first truthy value, polled every `every` s; fails the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# The session's shared workers; tests that kill or count their own workers pause these.
SESSION_WORKERS: list[subprocess.Popen] = []


@pytest.fixture(scope="session")
def celery_worker() -> Iterator[subprocess.Popen]:
    """A real Celery worker process on the machine's Redis (this session's key prefix)."""
    proc = start_worker()
    SESSION_WORKERS.append(proc)
    time.sleep(2)
    assert proc.poll() is None, "celery worker exited at start-up"
    yield proc
    SESSION_WORKERS.remove(proc)
    stop_process(proc)


@pytest.fixture
def only_private_workers() -> Iterator[None]:
    """Pause the session's shared worker (SIGSTOP), so only the test's own workers take tasks."""
    paused = [proc for proc in SESSION_WORKERS if proc.poll() is None]
    for proc in paused:
        os.killpg(proc.pid, signal.SIGSTOP)
    yield
    for proc in paused:
        os.killpg(proc.pid, signal.SIGCONT)


def point_mlflow_at(monkeypatch: pytest.MonkeyPatch, url: str, token: str, *, max_retries: int | None = 0) -> None:
    """Point this process's mlflow client (tracking and registry) at `url`, authenticated by `token`, until
    `monkeypatch` is undone; `max_retries` None keeps the client's own retries (0: a failure shows at once).

    mlflow.set_tracking_uri/set_registry_uri also write MLFLOW_TRACKING_URI and MLFLOW_REGISTRY_URI into
    os.environ, where monkeypatch would not undo them: every later subprocess (examples/walk.py,
    examples/sweep.py, `tessera up`) then sent its registry calls to this session's server."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    for name, value in {
        "MLFLOW_TRACKING_URI": url,
        "MLFLOW_REGISTRY_URI": url,
        "MLFLOW_TRACKING_TOKEN": token,
    }.items():
        monkeypatch.setenv(name, value)
    if max_retries is not None:
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(max_retries))
    # Recorded as they are, so that undoing restores the process-wide URIs the calls below replace.
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)


_MLFLOW_SERVER_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_TOKEN")


@pytest.fixture(scope="module", autouse=True)
def _no_mlflow_server_leaks_out_of_a_module(request):
    """A module must leave the mlflow server and credentials in the environment as it found them: subprocesses
    of later modules inherit them (a leaked MLFLOW_REGISTRY_URI sent the walk's and the sweep's registry calls
    to another server). Restores them, and fails the module that leaked."""
    before = {name: os.environ.get(name) for name in _MLFLOW_SERVER_VARIABLES}
    yield
    leaked = {name: os.environ.get(name) for name in _MLFLOW_SERVER_VARIABLES if os.environ.get(name) != before[name]}
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    assert not leaked, f"{request.module.__name__} left {sorted(leaked)} in os.environ; use point_mlflow_at"


@pytest.fixture(autouse=True)
def _forget_mlflow_client_state():
    """The mlflow client keeps the active experiment and run in module globals and environment variables;
    tests act as different tenants, so each starts with none."""
    yield
    if "mlflow" not in sys.modules:
        return
    import mlflow
    from mlflow.tracking import fluent

    while mlflow.active_run() is not None:
        mlflow.end_run()
    fluent._active_experiment_id = None
    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        os.environ.pop(name, None)
