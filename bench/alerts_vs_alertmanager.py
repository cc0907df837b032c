"""Alerts to webhooks, side by side: Tessera's Alertmanager API v2 against Prometheus Alertmanager itself.

    .venv/bin/python bench/alerts_vs_alertmanager.py [--alerts 6000] [--rate 300] [--batch 20]
    .venv/bin/python bench/alerts_vs_alertmanager.py --quick     # 1,500 alerts at 300/s, with py-spy

Needs `prometheus-alertmanager` on PATH (Debian's package: `apt-get install prometheus-alertmanager`).
The same client posts the same alerts, `--batch` per `POST /api/v2/alerts` (as Prometheus posts them),
paced to `--rate` alerts per second, to each system in turn; every alert is its own group (`group_by:
['...']`, `group_wait: 0s`) and becomes one webhook to the same kind of receiver, an asyncio server in a
process of its own. Alertmanager holds alerts and its notification queue in memory (a crash forgets
them); Tessera commits every posted alert to PostgreSQL before it answers and delivers through its
outbox, with retries from the database, on its defaults here: the notifier API (uvicorn), 2 Celery
workers x 2 pool processes, beat, Redis, PostgreSQL. Latency is from the answer to the POST (the alert
is accepted) to the receiver reading its webhook. CPU is everything each system ran: Alertmanager's one
process; Tessera's API, workers, beat and PostgreSQL backends. The last line is a JSON object with both
systems' figures and Tessera's ratios (> 1: Tessera better). With `--py-spy` (and `--quick`), Tessera's
CPU is also split by stage of the notifier's path (`cpu_ms_per_delivery_by_stage`), from the samples.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import httpx

# The notifier benchmark's scratch PostgreSQL database, Redis, receiver and CPU meters (importing it sets
# the TESSERA_* settings of this run).
import notifier_throughput as scratch
import stopping
from sqlalchemy import text

from services.registry.domain.bootstrap import create_key_for
from shared.core.settings import get_settings
from shared.db.migrate import upgrade
from shared.db.session import get_database

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
# A development tool, next to this interpreter when installed into the virtualenv (`pip install py-spy`).
PY_SPY = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy") or "py-spy"
PY_SPY_RECORD = [PY_SPY, "record", "--subprocesses", "--nonblocking", "--format", "raw", "--rate", "200"]


def _wait_until_up(url: str, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start")


def _post(url: str, headers: dict[str, str], first: int, total: int, rate: float, batch: int) -> dict[int, float]:
    """Post alerts `first .. first + total - 1`, `batch` per request, paced to `rate`; returns when each
    was accepted."""
    accepted: dict[int, float] = {}
    started = time.monotonic()
    with httpx.Client(timeout=30) as client:
        for offset in range(0, total, batch):
            sequences = range(first + offset, first + min(offset + batch, total))
            alerts = [{"labels": {"alertname": "BenchAlert", "seq": str(seq)}} for seq in sequences]
            response = client.post(url, json=alerts, headers=headers)
            response.raise_for_status()
            now = time.time()
            accepted.update({seq: now for seq in sequences})
            pause = started + (offset + batch) / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    return accepted


def _run(
    post_url: str, headers: dict[str, str], receiver: scratch.Receiver, options, cpu, profile=lambda: None
) -> dict:
    """Warm up, post the measured alerts, wait for their webhooks; `cpu()` reads the CPU seconds of each
    part of the system (process, or group of processes), `profile()` starts a profiler and returns a
    function that stops it."""
    _post(post_url, headers, -options.warmup, options.warmup, options.rate, options.batch)
    deadline = time.monotonic() + 60
    while len(receiver.arrivals()) < options.warmup and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    load_before = os.getloadavg()[0]
    stop_profile = profile()
    cpu_before = cpu()
    accepted = _post(post_url, headers, 0, options.alerts, options.rate, options.batch)
    seen, last_progress = 0, time.monotonic()
    while seen < options.alerts and time.monotonic() - last_progress < options.timeout:
        time.sleep(0.5)
        arrived = sum(1 for _, sequence, _ in receiver.arrivals() if sequence >= 0)
        if arrived > seen:
            seen, last_progress = arrived, time.monotonic()
    cpu_after = cpu()
    if stop_profile is not None:
        stop_profile()
    cpu_by_part = {part: cpu_after[part] - cpu_before.get(part, 0.0) for part in cpu_after}
    cpu_seconds = sum(cpu_by_part.values())
    arrivals = [arrival for arrival in receiver.arrivals() if arrival[1] >= 0]
    first_arrival: dict[int, float] = {}
    for _, sequence, arrived in arrivals:
        first_arrival.setdefault(sequence, arrived)
    latencies = [(first_arrival[seq] - accepted[seq]) * 1000 for seq in first_arrival]
    span = max(arrived for _, _, arrived in arrivals) - min(accepted.values())
    return {
        "deliveries_per_s": round(len(first_arrival) / span, 1),
        "p50_ms": round(scratch._percentile(latencies, 0.5), 1),
        "p99_ms": round(scratch._percentile(latencies, 0.99), 1),
        "lost": options.alerts - len(first_arrival),
        "duplicates": len(arrivals) - len(first_arrival),
        "cpu_ms_per_delivery": round(cpu_seconds * 1000 / max(len(first_arrival), 1), 2),
        "cpu_ms_per_delivery_by_part": {
            part: round(seconds * 1000 / max(len(first_arrival), 1), 3) for part, seconds in cpu_by_part.items()
        },
        # The machine's other work moves the latencies; the CPU per delivery far less.
        "load_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def run_alertmanager(options) -> dict:
    receiver = scratch.Receiver("alertmanager-arrivals")
    port = scratch._free_port()
    folder = scratch.DATA_DIR / "alertmanager"
    folder.mkdir()
    config = folder / "alertmanager.yml"
    config.write_text(
        json.dumps(
            {
                "route": {
                    "receiver": "hook",
                    "group_by": ["..."],
                    "group_wait": "0s",
                    "group_interval": "5m",
                    "repeat_interval": "4h",
                },
                "receivers": [{"name": "hook", "webhook_configs": [{"url": receiver.url, "send_resolved": False}]}],
            }
        )
    )
    process = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={folder}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        start_new_session=True,
    )
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/-/ready", "Alertmanager")
        return _run(
            f"http://127.0.0.1:{port}/api/v2/alerts",
            {},
            receiver,
            options,
            lambda: {"alertmanager": scratch._cpu_seconds([process.pid])},
        )
    finally:
        scratch._stop(process)
        receiver.stop()


def run_tessera(options) -> dict:
    receiver = scratch.Receiver("tessera-arrivals")
    redis = subprocess.Popen(
        ["redis-server", "--port", str(scratch.REDIS_PORT), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    with scratch._admin_engine().connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{scratch.DB_NAME}"'))
    processes: list[subprocess.Popen] = []
    try:
        upgrade(get_settings().database_url)
        scratch._set_up_tenant(receiver.url)
        with get_database(get_settings().database_url).session_scope() as session:
            _, key = create_key_for(
                session,
                email=f"bench-{scratch.RUN_ID}@example.com",
                scopes=["admin"],
                org_slug=None,
                project=None,
                expires_in_days=None,
                name="bench",
            )
        port = scratch._free_port()
        api = subprocess.Popen(
            [sys.executable, "-m", "tessera", "serve", "notifier", "--port", str(port)],
            cwd=scratch.ROOT,
            env=os.environ.copy(),
            start_new_session=True,
        )
        processes.append(api)
        for index in range(2):
            processes.append(
                scratch._celery(
                    "worker",
                    "--loglevel=WARNING",
                    "--concurrency=2",
                    "--without-gossip",
                    "--without-mingle",
                    "--hostname",
                    f"bench-{scratch.RUN_ID}-{index}@%h",
                )
            )
        processes.append(scratch._celery("beat", "--loglevel=WARNING", "-s", str(scratch.DATA_DIR / "beat-schedule")))
        _wait_until_up(f"http://127.0.0.1:{port}/healthz", "the notifier API")
        time.sleep(3)  # workers and beat start

        parts = {"api": api, "worker-0": processes[1], "worker-1": processes[2], "beat": processes[3]}

        def cpu() -> dict[str, float]:
            # Each part with its children (a worker's pool processes), then the run's PostgreSQL backends.
            seconds = {name: scratch._cpu_seconds(scratch._group_members({proc.pid})) for name, proc in parts.items()}
            return seconds | {"postgres": scratch._cpu_seconds(scratch._postgres_backends())}

        def profile():
            if not options.py_spy:
                return None
            return _py_spy(options.py_spy, {name: proc.pid for name, proc in parts.items() if name != "beat"})

        return _run(
            f"http://127.0.0.1:{port}/api/v2/alerts",
            {"Authorization": f"Bearer {key}"},
            receiver,
            options,
            cpu,
            profile,
        )
    finally:
        for proc in processes:
            scratch._stop(proc)
        receiver.stop()
        scratch._stop(redis)
        get_database.cache_clear()
        with scratch._admin_engine().connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch.DB_NAME}" WITH (FORCE)'))


def _py_spy(prefix: str, pids: dict[str, int]):
    """`py-spy record` over each process and its children (Python stacks with and without the GIL
    held are both kept); returns a function that stops them, which writes `<prefix>-<name>.txt` in
    py-spy's raw (collapsed stack) format, for `flamegraph.pl` or speedscope."""
    spies = [
        subprocess.Popen(
            [*PY_SPY_RECORD, "--pid", str(pid), "--output", f"{prefix}-{name}.txt"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]

    def stop() -> None:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            spy.wait(timeout=60)

    return stop


# The notifier's modules by stage of an alert's path; a sample counts for the deepest notifier frame on its
# stack, and a sample with none for the machinery around it (Celery, the broker, the web server).
STAGES = {
    "intake": "intake",
    "rule_match": "rule match",
    "config_cache": "rule match",
    "grouping": "grouping",
    "muting": "muting",
    "dispatch": "dispatch",
    "messages": "dispatch",
    "senders": "dispatch",
    "records": "dispatch",
    "attempt_log": "attempt log",
    "pipeline": "pipeline (the task around the stages)",
    "tasks": "pipeline (the task around the stages)",
}
_NOTIFIER_FRAME = re.compile(r"\(services/notifier/(?:domain/|api/)?([a-z_]+)\.py:\d+\)")
# Innermost frames of a thread that waits rather than runs: an event loop's poll (the outbound loop's,
# kombu's hub), a task thread waiting for the outbound loop's result, psycopg waiting for PostgreSQL
# (whose own CPU is counted apart). py-spy --nonblocking reports them as active; they are left out.
_WAITS = re.compile(
    r"^(?:\w+\.)?(?:select \(selectors\.py|poll \(kombu/utils/eventio\.py|wait \(threading\.py"
    r"|wait \(psycopg/connection\.py)"
)


def stage_shares(prefix: str) -> dict[str, float]:
    """Share of the sampled CPU of the API and workers per stage, from `<prefix>-*.txt` (py-spy raw)."""
    samples: collections.Counter[str] = collections.Counter()
    for path in glob.glob(f"{glob.escape(prefix)}-*.txt"):
        part = "api" if path.endswith("-api.txt") else "worker"
        with open(path) as profile:
            for line in profile:
                stack, _, count = line.rstrip().rpartition(" ")
                if _WAITS.match(stack.rpartition(";")[2]):
                    continue
                modules = _NOTIFIER_FRAME.findall(stack)
                if modules:
                    stage = STAGES.get(modules[-1], modules[-1])
                    samples[f"{part}: {stage}"] += int(count)
                else:
                    samples[f"{part}: celery, broker, web server, interpreter"] += int(count)
    total = sum(samples.values()) or 1
    return {stage: count / total for stage, count in samples.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=6000)
    parser.add_argument("--rate", type=float, default=300.0, help="alerts posted per second")
    parser.add_argument("--batch", type=int, default=20, help="alerts per POST")
    parser.add_argument("--warmup", type=int, default=1000, help="alerts posted (and not measured) first")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this long without a delivery")
    parser.add_argument("--py-spy", metavar="PREFIX", help="profile Tessera's API and workers with py-spy meanwhile")
    parser.add_argument("--only", choices=("alertmanager", "tessera"), help="run one system only")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1,500 alerts at 300/s after 300, profiled with py-spy into /tmp/alerts-bench-*.txt (a few minutes)",
    )
    options = parser.parse_args()
    if options.quick:
        options.alerts, options.rate, options.warmup = 1500, 300.0, 300
        options.py_spy = options.py_spy or "/tmp/alerts-bench"
    if ALERTMANAGER is None and options.only != "tessera":
        sys.exit("prometheus-alertmanager is not on PATH (Debian: apt-get install prometheus-alertmanager)")
    try:
        results = {}
        for name, run in (("alertmanager", run_alertmanager), ("tessera", run_tessera)):
            if options.only and options.only != name:
                continue
            print(f"{name}: {options.alerts} alerts at {options.rate:g}/s (load {os.getloadavg()[0]:.2f})", flush=True)
            results[name] = run(options)
            if name == "tessera" and options.py_spy:
                # The profiled processes: the API and the workers (not beat, not PostgreSQL).
                by_part = results[name]["cpu_ms_per_delivery_by_part"]
                sampled = sum(ms for part, ms in by_part.items() if part not in ("beat", "postgres"))
                results[name]["cpu_ms_per_delivery_by_stage"] = {
                    stage: round(share * sampled, 3) for stage, share in stage_shares(options.py_spy).items()
                }
            print(f"{name}: {results[name]}", flush=True)
        if options.only:
            print(json.dumps(results))
            return
        tessera, alertmanager = results["tessera"], results["alertmanager"]
        results["ratio"] = {
            "deliveries_per_s": round(tessera["deliveries_per_s"] / alertmanager["deliveries_per_s"], 2),
            "p50": round(alertmanager["p50_ms"] / tessera["p50_ms"], 2),
            "p99": round(alertmanager["p99_ms"] / tessera["p99_ms"], 2),
            "cpu_per_delivery": round(alertmanager["cpu_ms_per_delivery"] / tessera["cpu_ms_per_delivery"], 2),
        }
        print(json.dumps(results))
    finally:
        shutil.rmtree(scratch.DATA_DIR, ignore_errors=True)


if __name__ == "__main__":
    stopping.run(main)
