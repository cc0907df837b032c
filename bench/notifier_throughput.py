"""Notifier throughput: events through outbox -> rules -> webhook deliveries to a local receiver.

    .venv/bin/python bench/notifier_throughput.py [--events 10000] [--rate 600] [--workers 2] [--concurrency 4]

Everything is real and private to the run: a scratch PostgreSQL database (migrated, dropped at the
end), a redis-server on a random port, Celery worker and beat processes, and an HTTP receiver in this
process. Events are committed to the outbox at `--rate` per second in small batches, each its own
alert (`group_by: ["..."]`, `group_wait_s: 0`), so every event becomes one notification and one
signed webhook delivery. Latency is from the commit of an event to the receiver reading its request.
The last line printed is a JSON object with `deliveries_per_s`, `p50_ms`, `p99_ms`, `lost` and
`duplicates`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUN_ID = uuid.uuid4().hex[:8]
PG_SERVER = os.environ.get("TESSERA_BENCH_PG_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432")
DB_NAME = f"tessera_bench_notifier_{RUN_ID}"
DATA_DIR = Path(tempfile.mkdtemp(prefix=f"tessera-bench-{RUN_ID}-"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


REDIS_PORT = _free_port()
# Configuration reaches Tessera only through TESSERA_* settings: set them before it is imported, for
# this process and the workers alike.
os.environ.update(
    {
        "TESSERA_DATABASE_URL": f"{PG_SERVER}/{DB_NAME}",
        "TESSERA_BROKER_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
        "TESSERA_DATA_DIR": str(DATA_DIR),
        "TESSERA_OUTBOUND_ALLOWLIST": '["127.0.0.1"]',
        "TESSERA_LOG_LEVEL": "WARNING",
        "TESSERA_NOTIFIER_FLUSH_INTERVAL_S": "0.5",
        "TESSERA_NOTIFIER_SWEEP_INTERVAL_S": "1",
    }
)

from sqlalchemy import create_engine, text  # noqa: E402

import services.notifier.tasks  # noqa: E402, F401  (the outbox nudge after each commit)
from services.notifier.domain import channels, rules  # noqa: E402
from shared.core import events  # noqa: E402
from shared.core.auth import Access, Principal  # noqa: E402
from shared.core.crypto import SecretBox  # noqa: E402
from shared.core.settings import get_settings  # noqa: E402
from shared.db.migrate import upgrade  # noqa: E402
from shared.db.models import Organization, OrganizationMembership, User  # noqa: E402
from shared.db.session import get_database  # noqa: E402


class Receiver:
    """Answers 200 at once and notes, per webhook-id, when it arrived and which event it carried."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[str, int, float]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                arrived = time.time()
                sequence = int(json.loads(body)["alerts"][0]["labels"]["seq"])
                with receiver.lock:
                    receiver.arrivals.append((self.headers["webhook-id"], sequence, arrived))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        # A listen backlog for hundreds of concurrent senders (the default, 5, resets connections).
        ThreadingHTTPServer.request_queue_size = 1024
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _celery(*arguments: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "celery", "-A", "shared.core.celery_app:celery_app", *arguments]
    return subprocess.Popen(command, cwd=ROOT, env=os.environ.copy(), start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _cpu_seconds(pids) -> float:
    """User + system CPU of these processes so far (from /proc; processes gone meanwhile count 0)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _group_members(pgids: set[int]) -> list[int]:
    """Processes in these process groups: the Celery workers and beat with their pool children."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) in pgids:
                members.append(int(entry.name))
    return members


def _postgres_backends() -> list[int]:
    with _admin_engine().connect() as conn:
        return list(conn.scalars(text("SELECT pid FROM pg_stat_activity WHERE datname = :db"), {"db": DB_NAME}))


class CpuMeter:
    """CPU seconds used by the Celery processes, this run's PostgreSQL backends and this process
    (emitter and receiver) between start and stop: a cost per delivery that the machine's load
    moves far less than wall-clock figures."""

    def __init__(self, celery: list[subprocess.Popen]) -> None:
        self.pgids = {proc.pid for proc in celery}
        self.workers = _cpu_seconds(_group_members(self.pgids))
        self.backends = {pid: _cpu_seconds([pid]) for pid in _postgres_backends()}
        self.bench = sum(os.times()[:2])

    def stop(self) -> dict[str, float]:
        backends = _postgres_backends()
        return {
            "celery": _cpu_seconds(_group_members(self.pgids)) - self.workers,
            "postgres": sum(_cpu_seconds([pid]) - self.backends.get(pid, 0.0) for pid in backends),
            "bench": sum(os.times()[:2]) - self.bench,
        }


def _admin_engine():
    return create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")


def _set_up_tenant(receiver_url: str):
    """An organization with a webhook channel and a rule that makes every event its own notification."""
    database = get_database(get_settings().database_url)
    with database.session_scope() as session:
        user = User(email=f"bench-{RUN_ID}@example.com", full_name="Bench")
        org = Organization(name="Bench", slug=f"bench-{RUN_ID}", settings={})
        session.add_all([user, org])
        session.flush()
        session.add(OrganizationMembership(organization_id=org.id, user_id=user.id, role="owner"))
        session.flush()
        access = Access(session, Principal(user_id=user.id, email=user.email))
        channel, _ = channels.create_channel(
            session,
            access,
            SecretBox(get_settings().encryption_keys),
            organization_id=org.id,
            project_id=None,
            name="receiver",
            channel_type="webhook",
            fields={"url": receiver_url},
        )
        rules.create_rule(
            session,
            access,
            org.id,
            {"name": "everything", "channel_ids": [str(channel.id)], "group_by": ["..."], "group_wait_s": 0},
        )
        return org.id


def _emit(org_id, total: int, rate: float, batch: int, first_sequence: int = 0) -> dict[int, float]:
    """Commit `total` events, `batch` per transaction, paced to `rate` per second; returns commit times."""
    database = get_database(get_settings().database_url)
    committed: dict[int, float] = {}
    started = time.monotonic()
    for first in range(0, total, batch):
        sequences = range(first_sequence + first, first_sequence + min(first + batch, total))
        with database.session_scope() as session:
            for sequence in sequences:
                events.emit(
                    session,
                    "alert.firing",
                    {"severity": "high", "labels": {"seq": str(sequence)}, "fingerprint": f"bench-{sequence}"},
                    organization_id=org_id,
                )
        now = time.time()
        committed.update({sequence: now for sequence in sequences})
        pause = started + (first + batch) / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    return committed


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=600.0, help="events committed per second")
    parser.add_argument("--batch", type=int, default=20, help="events per transaction")
    parser.add_argument("--warmup", type=int, default=400, help="events sent (and not measured) before the run")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=4, help="pool size per worker")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="give up after this many seconds without a delivery"
    )
    options = parser.parse_args()

    redis = subprocess.Popen(
        ["redis-server", "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    with _admin_engine().connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
    processes: list[subprocess.Popen] = []
    try:
        upgrade(get_settings().database_url)
        receiver = Receiver()
        org_id = _set_up_tenant(receiver.url)
        for index in range(options.workers):
            processes.append(
                _celery(
                    "worker",
                    "--loglevel=WARNING",
                    f"--concurrency={options.concurrency}",
                    "--without-gossip",
                    "--without-mingle",
                    "--hostname",
                    f"bench-{RUN_ID}-{index}@%h",
                )
            )
        processes.append(_celery("beat", "--loglevel=WARNING", "-s", str(DATA_DIR / "beat-schedule")))
        time.sleep(5)  # workers and beat start
        # Warm-up, not measured: every pool process imports and connects on its first tasks.
        _emit(org_id, options.warmup, options.rate, options.batch, first_sequence=-options.warmup)
        deadline = time.monotonic() + 60
        while len(receiver.arrivals) < options.warmup and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        with receiver.lock:
            receiver.arrivals.clear()

        print(f"load before: {os.getloadavg()[0]:.2f}; {options.events} events at {options.rate:g}/s", flush=True)
        meter = CpuMeter(processes)
        committed = _emit(org_id, options.events, options.rate, options.batch)
        # Wait while deliveries keep arriving: "lost" means never delivered, not merely late.
        seen, last_progress = 0, time.monotonic()
        while seen < options.events and time.monotonic() - last_progress < options.timeout:
            time.sleep(0.5)
            if len(receiver.arrivals) > seen:
                seen, last_progress = len(receiver.arrivals), time.monotonic()

        cpu = meter.stop()
        with receiver.lock:
            arrivals = list(receiver.arrivals)
        first_arrival: dict[int, float] = {}
        for _, sequence, arrived in arrivals:
            first_arrival.setdefault(sequence, arrived)
        latencies_ms = [(first_arrival[s] - committed[s]) * 1000 for s in first_arrival]
        delivered = len(first_arrival)
        span = max(a[2] for a in arrivals) - min(committed.values()) if arrivals else float("inf")
        result = {
            "events": options.events,
            "deliveries_per_s": round(delivered / span, 1),
            "p50_ms": round(_percentile(latencies_ms, 0.50), 1) if latencies_ms else None,
            "p99_ms": round(_percentile(latencies_ms, 0.99), 1) if latencies_ms else None,
            "lost": options.events - delivered,
            "duplicates": len(arrivals) - len({a[0] for a in arrivals}),
            "cpu_ms_per_delivery": {
                name: round(seconds * 1000 / max(delivered, 1), 2) for name, seconds in cpu.items()
            },
            "load_after": round(os.getloadavg()[0], 2),
        }
        print(
            f"delivered {delivered}/{options.events} in {span:.1f} s: {result['deliveries_per_s']} deliveries/s, "
            f"event-to-delivery p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms; "
            f"lost {result['lost']}, duplicates {result['duplicates']}",
            flush=True,
        )
        print(
            "CPU ms per delivery: " + ", ".join(f"{name} {ms}" for name, ms in result["cpu_ms_per_delivery"].items()),
            flush=True,
        )
        print(json.dumps(result))
    finally:
        for proc in processes:
            _stop(proc)
        _stop(redis)
        get_database.cache_clear()
        with _admin_engine().connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
