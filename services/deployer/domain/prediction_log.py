"""Served requests and predictions, batched in memory and queued for the monitor off the response path.

The default sink writes each batch to the database's queue of served predictions (`database_sink`), from
where the monitor's ingest task logs them to the deployment's linked monitor: the gateway never waits on the
monitor, and a monitor that is slow or stopped loses nothing. The sink is a plain async callable so the
transport can change without touching the gateway. Batches leave when `max_batch` records are waiting or
every `flush_interval_s`, whichever comes first. A batch the sink refuses (the database unreachable) is kept
and tried again at the next flush; the buffer is bounded, so if that lasts longer than the buffer, the oldest
records are dropped and counted, because serving must never wait on logging.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy.orm import Session

from shared.core import served_predictions
from shared.core.metrics import REGISTRY

log = structlog.get_logger("tessera.prediction_log")

PredictionSink = Callable[[list[dict[str, Any]]], Awaitable[None]]

LOGGED = Counter(
    "tessera_deployment_predictions_logged_total",
    "Prediction records queued for the monitor (sent), refused by the queue and kept (retried) or lost (dropped)",
    ["result"],
    registry=REGISTRY,
)


class PredictionLogger:
    def __init__(
        self, sink: PredictionSink, *, max_batch: int = 200, flush_interval_s: float = 1.0, max_buffer: int = 20_000
    ) -> None:
        self.sink = sink
        self.max_batch = max_batch
        self.flush_interval_s = flush_interval_s
        self.max_buffer = max_buffer
        self._buffer: deque[dict[str, Any]] = deque(maxlen=max_buffer)
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closing = False

    def add(self, record: dict[str, Any]) -> None:
        """O(1) and never blocks: the record waits in memory for the background flusher."""
        if len(self._buffer) == self._buffer.maxlen:
            LOGGED.labels("dropped").inc()
        self._buffer.append(record)
        if self._runner is None:
            self._runner = asyncio.ensure_future(self._run())
        if len(self._buffer) >= self.max_batch:
            self._wake.set()

    async def _run(self) -> None:
        while not self._closing:
            woken = False
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that races the wake-up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval_s):
                    woken = await self._wake.wait()
            self._wake.clear()
            # Woken by a full batch: send full batches only. Otherwise the records that arrive while one batch
            # is in flight would leave a few at a time, one monitor request each, for as long as traffic lasts.
            await self.flush(min_batch=self.max_batch if woken else 1)

    async def flush(self, min_batch: int = 1) -> None:
        """Send the buffer in batches of up to `max_batch` while at least `min_batch` records wait."""
        while self._buffer and len(self._buffer) >= min_batch:
            batch = [self._buffer.popleft() for _ in range(min(self.max_batch, len(self._buffer)))]
            try:
                await self.sink(batch)
            except Exception as exc:  # whatever the transport raises, the gateway carries on
                # Kept, oldest first, for the next flush; what no longer fits is dropped and counted.
                room = self.max_buffer - len(self._buffer)
                LOGGED.labels("retried").inc(min(room, len(batch)))
                LOGGED.labels("dropped").inc(max(0, len(batch) - room))
                self._buffer.extendleft(reversed(batch[len(batch) - room :]))
                log.warning("prediction_log.send_failed", error=str(exc), records=len(batch))
                return
            LOGGED.labels("sent").inc(len(batch))

    async def aclose(self) -> None:
        """Stop the flusher after it has sent what is buffered (no cancellation mid-send)."""
        self._closing = True
        if self._runner is not None:
            self._wake.set()
            await self._runner
        await self.flush()


def database_sink(session_scope: Callable[[], AbstractContextManager[Session]]) -> PredictionSink:
    """Queue each batch's served requests per deployment in one transaction, in a thread (off the event loop).
    They are queued as they came: the monitor's ingest task pairs their rows with their predictions, so the
    serving process spends nothing on parsing them."""

    def write(batch: list[dict[str, Any]]) -> None:
        by_deployment: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in batch:
            if (served := served_predictions.served_request(record)) is not None:
                by_deployment[record["deployment_id"]].append(served)
        now = datetime.now(UTC)
        with session_scope() as session:
            for deployment_id, rows in by_deployment.items():
                if rows:
                    served_predictions.queue_rows(session, uuid.UUID(deployment_id), rows, now)

    async def send(batch: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(write, batch)

    return send
