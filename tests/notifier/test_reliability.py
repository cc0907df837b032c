"""Reliability with real parts: Celery worker and beat processes, Redis, PostgreSQL, a local HTTP
receiver. Workers are killed with SIGKILL, Redis is restarted, two beats run at once — and every
notification still arrives, duplicates only ever carrying the same webhook-id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select
from standardwebhooks import Webhook

import services.notifier.tasks  # noqa: F401  (installs the outbox nudge in this process)
from services.notifier.domain.config import channels
from shared.core import events
from shared.core.crypto import SecretBox
from shared.core.outbound import OutboundPolicy
from shared.db.base import utcnow
from shared.db.models import Delivery, NotifierPeriodicRun
from tests.conftest import ROOT, free_port, start_worker, stop_process, wait_for
from tests.notifier.builders import make_channel, make_rule, owner_access
from tests.notifier.conftest import Receiver, Reply

# Only this module's own workers may take tasks: the session's shared worker (started by earlier
# modules) would otherwise deliver what these tests kill, restart or count.
pytestmark = pytest.mark.usefixtures("only_private_workers")


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process and its pool children (they share its process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class Stack:
    """A worker and a beat on one broker: the session's Redis, or a private one."""

    def __init__(self, folder: Path, broker_url: str | None = None) -> None:
        self.folder = folder
        self.env = {"TESSERA_BROKER_URL": broker_url} if broker_url else {}
        self.worker: subprocess.Popen | None = None
        self.beats: list[subprocess.Popen] = []

    def start_worker(self) -> None:
        self.worker = start_worker(concurrency=2, extra_env=self.env)

    def start_beat(self) -> subprocess.Popen:
        schedule = self.folder / f"beat-{uuid.uuid4().hex[:6]}"
        command = [sys.executable, "-m", "celery", "-A", "tessera.worker:celery_app", "beat"]
        command += ["--loglevel=WARNING", "-s", str(schedule)]
        beat = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **self.env}, start_new_session=True)
        self.beats.append(beat)
        return beat

    def start(self) -> Stack:
        self.start_worker()
        self.start_beat()
        return self

    def kill_worker(self) -> None:
        _kill_group(self.worker)

    def stop(self) -> None:
        for proc in [self.worker, *self.beats]:
            if proc is not None:
                stop_process(proc)
                _kill_group(proc)
        self.beats = []


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("celery")).start()
    yield running
    running.stop()


@pytest.fixture
def box(settings) -> SecretBox:
    return SecretBox(settings.encryption_keys)


def _setup(db, box, tenant, receiver_url: str, **rule):
    with db.session_scope() as session:
        channel, secret = make_channel(session, box, tenant, url=receiver_url)
        make_rule(session, tenant, [channel], **{"group_wait_s": 0, "group_by": ["..."], **rule})
        return channel.id, secret


def _emit(db, tenant, count: int, prefix: str = "", **payload) -> None:
    """`count` distinct firing alerts (label `n` and fingerprint differ)."""
    extra_labels = payload.pop("labels", {})
    with db.session_scope() as session:
        for index in range(count):
            labels = {"n": f"{prefix}{index}", **extra_labels}
            events.emit(
                session,
                "alert.firing",
                {"severity": "high", "labels": labels, "fingerprint": f"{prefix}fp-{index}", **payload},
                organization_id=tenant.org_id,
            )


def _deliveries(db, tenant) -> list[Delivery]:
    with db.session_scope() as session:
        return list(session.scalars(select(Delivery).where(Delivery.organization_id == tenant.org_id)))


def _all_delivered(db, tenant, count: int) -> bool:
    rows = _deliveries(db, tenant)
    return len(rows) == count and all(row.state == "delivered" for row in rows)


def _ids_received(receiver: Receiver) -> Counter:
    return Counter(request.headers["webhook-id"] for request in receiver.requests)


def test_500_three_times_then_200_arrives_once_with_one_webhook_id(stack, db, box, live_tenant, receiver):
    receiver.script(Reply(500), Reply(503), Reply(500))
    _, secret = _setup(db, box, live_tenant, receiver.url())
    _emit(db, live_tenant, 1)
    wait_for(lambda: _all_delivered(db, live_tenant, 1), what="delivery after three failures")
    assert [r.headers["webhook-id"] for r in receiver.requests] == [receiver.requests[0].headers["webhook-id"]] * 4
    assert len({r.body for r in receiver.requests}) == 1
    [row] = _deliveries(db, live_tenant)
    assert row.total_attempts == 4 and str(row.notification_id) == receiver.requests[0].headers["webhook-id"]
    Webhook(secret).verify(receiver.requests[-1].body, receiver.requests[-1].headers)


def test_twenty_alerts_of_one_group_make_one_message_and_silenced_or_private_ones_none(
    stack, db, box, live_tenant, receiver
):
    _setup(db, box, live_tenant, receiver.url(), group_by=["model"], group_wait_s=1)
    _emit(db, live_tenant, 20, model_name="churn")
    wait_for(lambda: receiver.requests, what="the grouped message")
    time.sleep(1.5)
    [request] = receiver.requests
    assert len(json.loads(request.body)["alerts"]) == 20

    # A real send to a private address is refused by the same guard as the test button (the channel was
    # created while the allow-list admitted it).
    with db.session_scope() as session:
        admitting = OutboundPolicy(allowlist=["169.254.0.0/16"])
        metadata_url = "http://169.254.169.254/latest/meta-data/"
        private, _ = make_channel(session, box, live_tenant, url=metadata_url, policy=admitting)
        make_rule(session, live_tenant, [private], group_wait_s=0, matchers=['target="metadata"'])
    _emit(db, live_tenant, 1, labels={"target": "metadata"})
    refused = wait_for(
        lambda: [row for row in _deliveries(db, live_tenant) if row.channel_id == private.id and row.state == "failed"],
        what="the refused delivery",
    )
    assert "not a public address" in refused[0].last_error


def test_signatures_verify_during_rotation(stack, db, box, live_tenant, receiver):
    channel_id, old = _setup(db, box, live_tenant, receiver.url())
    with db.session_scope() as session:
        _, new, _ = channels.rotate_signing_secret(
            session,
            owner_access(session, live_tenant),
            box,
            channel_id,
            overlap_seconds=60,
            new_secret=None,
            now=utcnow(),
        )
    _emit(db, live_tenant, 1)
    wait_for(lambda: receiver.requests, what="a signed message")
    [request] = receiver.requests
    assert Webhook(old).verify(request.body, request.headers) == Webhook(new).verify(request.body, request.headers)


def test_a_worker_killed_mid_dispatch_loses_nothing(stack, db, box, live_tenant, receiver):
    # Slow answers keep deliveries in flight when the worker dies (long enough for a busy machine to
    # kill it before the first answer comes back).
    receiver.script(*[Reply(200, delay_seconds=3.0)] * 4)
    _setup(db, box, live_tenant, receiver.url())
    _emit(db, live_tenant, 6)
    wait_for(lambda: receiver.requests, what="a first delivery in flight")
    stack.kill_worker()
    stack.start_worker()
    wait_for(lambda: _all_delivered(db, live_tenant, 6), timeout=60, what="every delivery after the restart")
    received = _ids_received(receiver)
    assert set(received) == {str(row.notification_id) for row in _deliveries(db, live_tenant)}
    # The one in flight when the worker died went out again once its lease ran out: same id.
    assert max(received.values()) >= 2
    # Duplicates, if any, are the same message with the same id (the receiver dedupes by webhook-id).
    for webhook_id in received:
        assert len({r.body for r in receiver.requests if r.headers["webhook-id"] == webhook_id}) == 1


def test_two_beats_never_run_a_periodic_task_twice(stack, db, settings):
    def counts():
        with db.session_scope() as session:
            row = session.get(NotifierPeriodicRun, "notifier.flush")
            return (row.runs, row.requests) if row else (0, 0)

    wait_for(lambda: counts()[0] > 0, what="the first flush run")
    second = stack.start_beat()
    runs_before, requests_before = counts()
    started = time.monotonic()
    interval = settings.notifier_flush_interval_s
    try:

        def duplicates_refused():
            runs, requests = counts()
            # Once the second beat is up, asks outnumber runs: the duplicates were refused.
            return runs - runs_before >= 4 and requests - runs - (requests_before - runs_before) >= 3

        wait_for(duplicates_refused, what="the second beat's ticks")
        runs, _ = counts()
        assert runs - runs_before <= (time.monotonic() - started) / interval + 2
    finally:
        stop_process(second)
        stack.beats.remove(second)


@pytest.fixture
def private_redis() -> Iterator[Callable[[], None]]:
    """A redis-server of our own (other engineers share 6379); calling the fixture restarts it empty."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
    state = {"proc": None}

    def start() -> None:
        state["proc"] = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis(port=port)
        wait_for(lambda: _pings(client), what="redis-server")

    def restart_empty() -> None:
        _kill_group(state["proc"])
        start()

    start()
    restart_empty.url = f"redis://127.0.0.1:{port}/0"
    restart_empty.stop = lambda: _kill_group(state["proc"])
    yield restart_empty
    _kill_group(state["proc"])


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_a_redis_restart_loses_nothing(stack, tmp_path, db, box, live_tenant, receiver, private_redis):
    # Only the private stack may move this test's events, so the session's stack pauses.
    stack.stop()
    private = Stack(tmp_path, broker_url=private_redis.url).start()
    try:
        receiver.script(*[Reply(200, delay_seconds=0.5)] * 3)
        _setup(db, box, live_tenant, receiver.url())
        _emit(db, live_tenant, 6)
        wait_for(lambda: receiver.requests, what="deliveries under way")
        # Queued messages vanish with Redis (nothing on disk); events emitted meanwhile wait in the outbox.
        private_redis.stop()
        _emit(db, live_tenant, 3, prefix="while-down-")
        private_redis()

        def supervised_until_delivered() -> bool:
            # Celery's worker may die of the lost connection ("Unrecoverable error" in kombu's Redis
            # transport); a supervisor restarts it, as compose or systemd would.
            if private.worker.poll() is not None:
                private.start_worker()
            return _all_delivered(db, live_tenant, 9)

        wait_for(supervised_until_delivered, timeout=60, what="every delivery after the restart")
        assert set(_ids_received(receiver)) == {str(row.notification_id) for row in _deliveries(db, live_tenant)}
    finally:
        private.stop()
        stack.start()
