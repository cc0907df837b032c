"""How long the console takes to render the first page of each list when the list holds 10,000 items.

Makes a fresh PostgreSQL database (dropped at the end), fills one organization with N deployments, models,
monitors, alerts, API keys and audit-log entries, serves the all-in-one app (console included) with uvicorn,
and times full page loads (server answer, HTML complete) as a signed-in owner: the median of 5 after one
warm-up. The issue's goal is under 1 s per first page.

    .venv/bin/python bench/console_pages.py                 # 10,000 of each
    .venv/bin/python bench/console_pages.py --items 1000 --pg postgresql+psycopg://postgres@127.0.0.1:5432
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import stopping

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAGES = {
    "deployments": "/console/deployments",
    "models": "/console/models",
    "monitors": "/console/monitors",
    "alerts": "/console/alerts",
    "api keys": "/console/api-keys",
    "audit log": "/console/audit",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000, help="rows per list")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432", help="PostgreSQL server")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = make_url(args.pg)
    name = f"tessera_bench_console_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    data_dir = tempfile.mkdtemp(prefix="tessera-bench-console-")
    os.environ.update(
        {
            "TESSERA_DATABASE_URL": server.set(database=name).render_as_string(hide_password=False),
            "TESSERA_DATA_DIR": data_dir,
            "TESSERA_BROKER_URL": "memory://",
            "TESSERA_LOG_LEVEL": "WARNING",
        }
    )
    try:
        run(args)
    finally:
        from shared.db.session import get_database

        get_database.cache_clear()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(args) -> None:
    import httpx
    import uvicorn

    from shared.core.settings import Settings
    from shared.db.migrate import upgrade
    from tessera.platform import create_app

    settings = Settings()
    upgrade(settings.database_url)
    started = time.perf_counter()
    token = fill(settings, args.items)
    print(f"filled {args.items:,} rows per list in {time.perf_counter() - started:.1f} s")

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            print(f"{'page':<12} {'median':>9} {'min':>9} {'max':>9}  first page")
            for label, path in PAGES.items():
                client.get(path).raise_for_status()  # warm-up: caches, first-use imports
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    response = client.get(path)
                    times.append(time.perf_counter() - t0)
                    response.raise_for_status()
                rows = response.text.count("<tr>") - 1  # less the header row
                more = " + 'Load more'" if "Load more" in response.text else ""
                print(
                    f"{label:<12} {statistics.median(times) * 1000:>7.0f}ms {min(times) * 1000:>7.0f}ms "
                    f"{max(times) * 1000:>7.0f}ms  {rows} rows{more}"
                )
    finally:
        server.should_exit = True


def fill(settings, items: int) -> str:
    """One owner, one organization and project, and `items` rows in every list; returns a login token."""
    from sqlalchemy import insert

    from shared.core.security import issue_token
    from shared.db.models import (
        Alert,
        ApiKey,
        AuditLog,
        Deployment,
        Model,
        ModelMonitoring,
        ModelVersion,
        Organization,
        OrganizationMembership,
        Project,
        User,
    )
    from shared.db.session import get_database

    db = get_database(settings.database_url)
    now = datetime.now(UTC)
    at = [now - timedelta(seconds=i) for i in range(items)]
    with db.session_scope() as session:
        user = User(email="bench@example.com", full_name="Bench", password_hash="x")
        org = Organization(name="Bench", slug="bench", settings={})
        session.add_all([user, org])
        session.flush()
        project = Project(organization_id=org.id, name="Default", slug="default")
        session.add_all([project, OrganizationMembership(organization_id=org.id, user_id=user.id, role="owner")])
        session.flush()
        model_ids = [uuid.uuid4() for _ in range(items)]
        session.execute(
            insert(Model),
            [
                {
                    "id": model_ids[i],
                    "project_id": project.id,
                    "name": f"model-{i:05d}",
                    "tags": {},
                    "last_version": 1,
                    "created_at": at[i],
                    "updated_at": at[i],
                }
                for i in range(items)
            ],
        )
        version = ModelVersion(model_id=model_ids[0], version=1, metrics={}, tags={})
        session.add(version)
        session.flush()
        session.execute(
            insert(Deployment),
            [
                {
                    "id": uuid.uuid4(),
                    "project_id": project.id,
                    "name": f"deployment-{i:05d}",
                    "target": "local",
                    "status": "healthy",
                    "model_version_id": version.id,
                    "config": {},
                    "created_at": at[i],
                    "updated_at": at[i],
                }
                for i in range(items)
            ],
        )
        monitor_ids = [uuid.uuid4() for _ in range(items)]
        session.execute(
            insert(ModelMonitoring),
            [
                {
                    "id": monitor_ids[i],
                    "project_id": project.id,
                    "name": f"monitor-{i:05d}",
                    "model_version_id": version.id,
                    "column_schema": {},
                    "config": {},
                    "schedule_interval_s": 3600,
                    "created_at": at[i],
                    "updated_at": at[i],
                }
                for i in range(items)
            ],
        )
        session.execute(
            insert(Alert),
            [
                {
                    "id": uuid.uuid4(),
                    "monitor_id": monitor_ids[i],
                    "project_id": project.id,
                    "kind": "data_drift",
                    "fingerprint": uuid.uuid4().hex,
                    "severity": "high",
                    "status": "firing",
                    "title": f"Drift {i}",
                    "details": {},
                    "labels": {"monitor": f"monitor-{i:05d}"},
                    "started_at": at[i],
                    "created_at": at[i],
                    "updated_at": at[i],
                }
                for i in range(items)
            ],
        )
        session.execute(
            insert(ApiKey),
            [
                {
                    "id": uuid.uuid4(),
                    "user_id": user.id,
                    "organization_id": org.id,
                    "name": f"key-{i:05d}",
                    "prefix": uuid.uuid4().hex[:12],
                    "key_hash": "x",
                    "scopes": ["deployments:read"],
                    "created_at": at[i],
                }
                for i in range(items)
            ],
        )
        session.execute(
            insert(AuditLog),
            [
                {
                    "id": uuid.uuid4(),
                    "organization_id": org.id,
                    "actor_user_id": user.id,
                    "action": "deployment.rollback",
                    "object_type": "deployment",
                    "object_id": str(i),
                    "method": "POST",
                    "path": "/api/v1/deployments",
                    "ip_address": "10.0.0.1",
                    "user_agent": "bench",
                    "outcome": "success",
                    "status_code": 200,
                    "details": {},
                    "created_at": at[i],
                }
                for i in range(items)
            ],
        )
        token, _ = issue_token(user.id, user.password_hash, secret=settings.jwt_secret, ttl_s=3600)
    return token


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    stopping.run(main)
