"""Served requests and predictions, batched in memory and sent to the monitor off the response path.

The monitor's logging endpoint (`POST /api/v1/monitors/{monitor_id}/predictions`) is the default sink;
the sink is a plain async callable so the transport can change without touching the gateway. Batches
leave when `max_batch` records are waiting or every `flush_interval_s`, whichever comes first. The buffer
is bounded: if the monitor is down longer than the buffer lasts, the oldest records are dropped and
counted, because serving must never wait on logging.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from prometheus_client import Counter

from services.deployer.domain.upstream import UpstreamClient, UpstreamError
from shared.core.web import REGISTRY

log = structlog.get_logger("tessera.prediction_log")

PredictionSink = Callable[[list[dict[str, Any]]], Awaitable[None]]

LOGGED = Counter(
    "tessera_deployment_predictions_logged_total",
    "Prediction records handed to the monitor (sent) or lost (dropped)",
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
                LOGGED.labels("dropped").inc(len(batch))
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


def monitor_http_sink(client: UpstreamClient, url_template: str, api_key: str = "") -> PredictionSink:
    """POST the monitor's `{"rows": [{"features", "prediction", "timestamp", "request_id"}]}` per monitor to
    `url_template.format(monitor_id=...)` (an API key with `monitoring:write`).

    Requests and answers are parsed here, at flush time, off the response path; one served request with
    N input rows becomes N rows. Failed requests, and payloads whose rows cannot be paired with their
    predictions, are not logged.
    """
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"

    async def send(batch: list[dict[str, Any]]) -> None:
        by_monitor: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in batch:
            by_monitor[record["monitor_id"]].extend(monitor_rows(record))
        for monitor_id, rows in by_monitor.items():
            if not rows:
                continue
            url = url_template.format(monitor_id=monitor_id)
            response = await client.request("POST", url, orjson.dumps({"rows": rows}), headers)
            if response.status_code >= 400:
                raise UpstreamError(f"the monitor answered {response.status_code}: {response.content[:200]!r}")

    return send


def monitor_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The monitor's rows for one served request: its input rows paired with their predictions."""
    if record["status_code"] != 200:
        return []
    try:
        features = _feature_rows(orjson.loads(record["request"]))
        predictions = _prediction_list(orjson.loads(record["response"]))
    except orjson.JSONDecodeError:
        return []
    if features is None or predictions is None or len(features) != len(predictions):
        return []
    timestamp = datetime.fromtimestamp(record["timestamp"], UTC).isoformat()
    rows = [
        {"features": row, "prediction": prediction, "timestamp": timestamp}
        for row, prediction in zip(features, predictions, strict=True)
    ]
    if request_id := record.get("request_id"):
        # One id per row: the request's own for a single row, `<id>:<row index>` for a batch.
        for index, row in enumerate(rows):
            row["request_id"] = request_id if len(rows) == 1 else f"{request_id}:{index}"
    return rows


def _feature_rows(request: Any) -> list[dict[str, Any]] | None:
    """Input rows as {column: value} from any request shape the model server accepts (MLflow or V2)."""
    if not isinstance(request, dict):
        return None
    if isinstance(split := request.get("dataframe_split"), dict):
        columns = split.get("columns") or [str(index) for index in range(len((split.get("data") or [[]])[0]))]
        return [dict(zip(columns, row, strict=False)) for row in split.get("data") or []]
    inputs = request.get("inputs")
    if isinstance(inputs, dict):
        columns = list(inputs)
        return [dict(zip(columns, values, strict=False)) for values in zip(*inputs.values(), strict=False)]
    if isinstance(inputs, list) and inputs and all(isinstance(item, dict) and "data" in item for item in inputs):
        # Open Inference Protocol: one named tensor per column.
        columns = [item.get("name") for item in inputs]
        tensors = (item["data"] for item in inputs)
        return [dict(zip(columns, values, strict=False)) for values in zip(*tensors, strict=False)]
    records = request.get("dataframe_records", request.get("instances", inputs))
    if isinstance(records, list):
        return [row if isinstance(row, dict) else {"input": row} for row in records]
    return None


def _prediction_list(answer: Any) -> list[Any] | None:
    if isinstance(answer, dict):
        predictions = answer.get("predictions")
        if predictions is None and answer.get("outputs"):
            predictions = answer["outputs"][0].get("data")
        return predictions if isinstance(predictions, list) else None
    return answer if isinstance(answer, list) else None
