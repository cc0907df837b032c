"""Notifier throughput: events through outbox -> rules -> webhook deliveries to a local receiver.

    .venv/bin/python bench/notifier_throughput.py [--events 10000] [--rate 600] [--workers 2] [--concurrency 2]

Everything is real and private to the run: a scratch PostgreSQL database (migrated, dropped at the
end), a redis-server on a random port, Celery worker and beat processes, and an HTTP receiver in a
process of its own. After a warm-up, events are committed to the outbox at `--rate` per second in
small batches, each its own alert (`group_by: ["..."]`, `group_wait_s: 0`), so every event becomes one
notification and one signed webhook delivery. Latency is from the commit of an event to the receiver
reading its request; its p50 and maximum are also printed for each second of the run. The last line
printed is a JSON object with `deliveries_per_s`, `p50_ms`, `p99_ms`, `lost`, `duplicates` and the CPU
milliseconds per delivery of each part.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import stopping

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
    }
)

from sqlalchemy import create_engine, text  # noqa: E402

from services.notifier.domain import senders  # noqa: E402
from services.notifier.domain.config import channels, rules  # noqa: E402
from shared.core import events  # noqa: E402
from shared.core.auth import Access, Principal  # noqa: E402
from shared.core.crypto import SecretBox  # noqa: E402
from shared.core.settings import get_settings  # noqa: E402
from shared.db.base import utcnow  # noqa: E402
from shared.db.migrate import upgrade  # noqa: E402
from shared.db.models import Organization, OrganizationMembership, User  # noqa: E402
from shared.db.session import get_database  # noqa: E402


class Receiver:
    """Answers 200 at once and notes, per request, its webhook-id, the event it carried and when it
    arrived. An asyncio server in a process of its own: it must not take CPU or the GIL from the
    emitter, nor spend a thread per connection (each delivery opens one)."""

    def __init__(self, name: str = "arrivals") -> None:
        self.log = DATA_DIR / f"{name}.log"
        self.log.touch()
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}/hook"
        self.process = multiprocessing.get_context("fork").Process(
            target=_serve_receiver, args=(port, str(self.log)), daemon=True
        )
        self.process.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("the receiver did not start")

    def arrivals(self) -> list[tuple[str, int, float]]:
        rows = []
        for line in self.log.read_text().splitlines():
            webhook_id, sequence, arrived = line.split()
            rows.append((webhook_id, int(sequence), float(arrived)))
        return rows

    def stop(self) -> None:
        self.process.kill()
        self.process.join()


def _serve_receiver(port: int, log_path: str) -> None:
    import asyncio

    log = open(log_path, "a", buffering=1)  # noqa: SIM115  (open for the process's life)
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.time()
                headers = dict(
                    line.split(": ", 1) for line in head.decode("latin-1").lower().split("\r\n")[1:] if ": " in line
                )
                body = await reader.readexactly(int(headers["content-length"]))
                sequence = json.loads(body)["alerts"][0]["labels"]["seq"]
                # Alertmanager sends no webhook-id.
                log.write(f"{headers.get('webhook-id', '-')} {sequence} {arrived}\n")
                writer.write(ok)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    asyncio.run(main())


def _celery(*arguments: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "celery", "-A", "tessera.worker:celery_app", *arguments]
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
    """CPU seconds used by the Celery processes, this run's PostgreSQL backends, this process (the
    emitter) and the receiver between start and stop: a cost per delivery that the machine's load
    moves far less than wall-clock figures."""

    def __init__(self, celery: list[subprocess.Popen], receiver: Receiver) -> None:
        self.pgids = {proc.pid for proc in celery}
        self.receiver_pid = receiver.process.pid
        self.workers = _cpu_seconds(_group_members(self.pgids))
        self.backends = {pid: _cpu_seconds([pid]) for pid in _postgres_backends()}
        self.emitter = sum(os.times()[:2])
        self.receiver = _cpu_seconds([self.receiver_pid])

    def stop(self) -> dict[str, float]:
        backends = _postgres_backends()
        return {
            "celery": _cpu_seconds(_group_members(self.pgids)) - self.workers,
            "postgres": sum(_cpu_seconds([pid]) - self.backends.get(pid, 0.0) for pid in backends),
            "emitter": sum(os.times()[:2]) - self.emitter,
            "receiver": _cpu_seconds([self.receiver_pid]) - self.receiver,
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
            senders.policy_for(get_settings()),
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


def _event(sequence: int, drift: bool) -> tuple[str, dict]:
    """An alert of the platform's own (`alert.firing`), or the one-shot notice a drift check commits with
    its report (`drift.detected`, the monitor's payload)."""
    if not drift:
        return "alert.firing", {
            "severity": "high",
            "labels": {"seq": str(sequence)},
            "fingerprint": f"bench-{sequence}",
        }
    return "drift.detected", {
        "alertname": "monitor_drift",
        "kind": "drift",
        "alert_id": str(uuid.uuid4()),
        "severity": "warning",
        "title": "Drift in 3 of 20 columns",
        "model_name": "churn",
        "version": "7",
        "labels": {"seq": str(sequence), "model": "churn", "version": "7"},
        "details": {"drifted_columns": ["age", "plan", "tenure"], "share": 0.15},
    }


def _emit(
    org_id, total: int, rate: float, batch: int, first_sequence: int = 0, drift: bool = False
) -> dict[int, float]:
    """Commit `total` events, `batch` per transaction, paced to `rate` per second; returns commit times."""
    database = get_database(get_settings().database_url)
    committed: dict[int, float] = {}
    started = time.monotonic()
    for first in range(0, total, batch):
        sequences = range(first_sequence + first, first_sequence + min(first + batch, total))
        with database.session_scope() as session:
            for sequence in sequences:
                event_type, payload = _event(sequence, drift)
                events.emit(session, event_type, payload, organization_id=org_id)
        now = time.time()
        committed.update({sequence: now for sequence in sequences})
        pause = started + (first + batch) / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    return committed


def _measure_stages(org_id, options) -> dict:
    """The pipeline's stages run in this process, batch by batch as a worker runs them, each stage's CPU
    time measured (`time.process_time`: what this process spent, whatever else the machine runs), and the
    PostgreSQL backends' CPU over the whole; no Celery, so no broker or task machinery in the figures."""
    from services.notifier.domain import attempt_log, dispatch, grouping, intake, muting, rule_match
    from services.notifier.domain.config import cache

    settings = get_settings()
    box = SecretBox(settings.encryption_keys)
    retry = attempt_log.RetryPolicy.from_settings(settings)
    database = get_database(settings.database_url)
    event_ids = []
    for first in range(-options.warmup, options.events, options.batch):
        with database.session_scope() as session:
            rows = [
                events.emit(session, *_event(sequence, options.drift), organization_id=org_id)
                for sequence in range(first, min(first + options.batch, options.events))
            ]
            session.flush()
            event_ids.append([row.id for row in rows])
    spent: dict[str, float] = {}

    def timed(stage, work, *arguments):
        started = time.process_time()
        result = work(*arguments)
        spent[stage] = spent.get(stage, 0.0) + time.process_time() - started
        return result

    delivered = 0
    for index, batch in enumerate(event_ids):
        if index == options.warmup // options.batch:
            spent.clear()
            delivered = 0
            backends_before = _cpu_seconds(_postgres_backends())
        session = database.sessionmaker()
        now = utcnow()
        taken = timed("1 intake", intake.take_events, session, batch, now)
        configs = timed("2 rule match", cache.configs, session, {event.organization_id for event in taken}, box, now)
        alerts = timed("1 intake", intake.event_alerts, session, taken, set(configs))
        targets = timed("2 rule match", rule_match.match, alerts, configs)
        groups = list(timed("3 grouping", grouping.place, session, targets, now).values())
        held_alerts = timed("3 grouping", grouping.alerts_of, session, groups)
        held = timed("4 muting", muting.held_back, session, groups, held_alerts, configs, now)
        notified = timed(
            "5 dispatch",
            dispatch.notify,
            session,
            groups,
            held_alerts,
            held,
            configs,
            now,
            settings.public_url,
            now + retry.lease,
        )
        timed("commit", session.commit)
        session.close()
        started_at = utcnow()
        results = timed("5 dispatch: send", dispatch.send_all, notified.claimed, settings, started_at)
        session = database.sessionmaker()
        outcomes = list(zip(notified.claimed, results, strict=True))
        timed(
            "6 attempt log",
            functools.partial(attempt_log.record, started_at=started_at, retry=retry, now=utcnow()),
            session,
            outcomes,
        )
        timed("commit", session.commit)
        session.close()
        delivered += sum(result.ok for result in results)
    postgres = _cpu_seconds(_postgres_backends()) - backends_before
    per_delivery = {stage: round(seconds * 1000 / max(delivered, 1), 3) for stage, seconds in sorted(spent.items())}
    return {
        "events": options.events,
        "delivered": delivered,
        "cpu_ms_per_delivery_by_stage": per_delivery,
        "python_ms_per_delivery": round(sum(spent.values()) * 1000 / max(delivered, 1), 3),
        "postgres_ms_per_delivery": round(postgres * 1000 / max(delivered, 1), 3),
        "load": round(os.getloadavg()[0], 2),
    }


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=600.0, help="events committed per second")
    parser.add_argument("--batch", type=int, default=20, help="events per transaction")
    parser.add_argument(
        "--warmup",
        type=int,
        default=2000,
        help="events sent (and not measured) before the run, enough for every pool process to have run each task",
    )
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument(
        "--concurrency", type=int, default=2, help="pool processes per worker (2 x 2: two per core of this machine)"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="give up after this many seconds without a delivery"
    )
    parser.add_argument(
        "--drift", action="store_true", help="events as a drift check commits them (drift.detected, one-shot)"
    )
    parser.add_argument("--quick", action="store_true", help="1,500 events at 300/s after 300 (a few minutes)")
    parser.add_argument(
        "--stages",
        action="store_true",
        help="no Celery: run the pipeline's stages in this process and print each stage's CPU per delivery",
    )
    options = parser.parse_args()
    if options.quick:
        options.events, options.rate, options.warmup = 1500, 300.0, 300

    redis = subprocess.Popen(
        ["redis-server", "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    with _admin_engine().connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
    processes: list[subprocess.Popen] = []
    receiver: Receiver | None = None
    try:
        upgrade(get_settings().database_url)
        receiver = Receiver()
        org_id = _set_up_tenant(receiver.url)
        if options.stages:
            print(json.dumps(_measure_stages(org_id, options)))
            return
        # The process's Celery app, as any Tessera process that commits events has it: each commit hands
        # its events straight to notifier.handle_events (without it they wait for the relay's grace period).
        import tessera.worker  # noqa: F401

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
        _emit(org_id, options.warmup, options.rate, options.batch, first_sequence=-options.warmup, drift=options.drift)
        deadline = time.monotonic() + 60
        while len(receiver.arrivals()) < options.warmup and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)

        print(f"load before: {os.getloadavg()[0]:.2f}; {options.events} events at {options.rate:g}/s", flush=True)
        meter = CpuMeter(processes, receiver)
        committed = _emit(org_id, options.events, options.rate, options.batch, drift=options.drift)
        # Wait while deliveries keep arriving: "lost" means never delivered, not merely late.
        seen, last_progress = 0, time.monotonic()
        while seen < options.events and time.monotonic() - last_progress < options.timeout:
            time.sleep(0.5)
            arrived = sum(1 for _, sequence, _ in receiver.arrivals() if sequence >= 0)
            if arrived > seen:
                seen, last_progress = arrived, time.monotonic()

        cpu = meter.stop()
        # The warm-up's events have negative sequence numbers.
        arrivals = [arrival for arrival in receiver.arrivals() if arrival[1] >= 0]
        first_arrival: dict[int, float] = {}
        for _, sequence, arrived in arrivals:
            first_arrival.setdefault(sequence, arrived)
        latencies_ms = [(first_arrival[s] - committed[s]) * 1000 for s in first_arrival]
        # Per second of the run (by commit time): a cold start or a stall shows where it happened.
        started = min(committed.values())
        by_second: dict[int, list[float]] = {}
        for sequence, arrived in first_arrival.items():
            by_second.setdefault(int(committed[sequence] - started), []).append((arrived - committed[sequence]) * 1000)
        print(
            "latency p50/max ms by second of the run: "
            + ", ".join(
                f"{second}s {_percentile(values, 0.5):.0f}/{max(values):.0f}"
                for second, values in sorted(by_second.items())
            ),
            flush=True,
        )
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
        if receiver is not None:
            receiver.stop()
        _stop(redis)
        get_database.cache_clear()
        with _admin_engine().connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        shutil.rmtree(DATA_DIR, ignore_errors=True)


if __name__ == "__main__":
    stopping.run(main)
