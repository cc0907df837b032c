"""Adaptive request batching: concurrent requests' frames merged into one model call and split back.

As in MLServer and BentoML, a batch is sent to the model when it holds `max_batch_size` requests or when
`max_latency` has passed since its first request, whichever comes first; while the model works on one batch
the next fills up, so the busier the server the larger its batches. Every request was parsed and checked
before it joined (a malformed one is refused on its own), and when the model fails on a merged batch each
request is scored alone, so one request the model cannot take fails only its own caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pandas as pd

from services.deployer.model_server.scoring import ScoringError

# Predicting one frame, and running a function off the event loop.
Predict = Callable[[pd.DataFrame], Any]
InThread = Callable[..., Awaitable[Any]]


class Batcher:
    def __init__(self, predict: Predict, in_thread: InThread, max_batch_size: int, max_latency_s: float) -> None:
        self.predict_frame = predict
        self.in_thread = in_thread
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_s
        self._queue: asyncio.Queue[tuple[pd.DataFrame, asyncio.Future[Any]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._full = asyncio.Event()

    async def predict(self, frame: pd.DataFrame) -> Any:
        """The predictions for this frame's rows, scored in a batch with whatever else arrives meanwhile."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((frame, future))
        # The worker holds the batch's first request: the rest fill it.
        if self._queue.qsize() >= self.max_batch_size - 1:
            self._full.set()
        if self._worker is None:
            self._worker = asyncio.ensure_future(self._run())
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self.max_latency_s > 0 and self._queue.qsize() < self.max_batch_size - 1:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.max_latency_s)
            while len(batch) < self.max_batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            waiting = [(frame, future) for frame, future in batch if not future.done()]  # callers timed out
            if not waiting:
                continue
            try:
                results = await self.in_thread(predict_batch, self.predict_frame, [frame for frame, _ in waiting])
            except Exception as exc:  # the thread pool itself failed: every caller hears it
                results = [exc] * len(waiting)
            for (_, future), result in zip(waiting, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)


def predict_batch(predict: Predict, frames: list[pd.DataFrame]) -> list[Any]:
    """Each frame's predictions (or its ScoringError), from one model call per group of frames with the same
    columns; a model that fails on a merged group, or answers it in a shape that cannot be split by rows,
    scores that group's frames one by one."""
    results: list[Any] = [None] * len(frames)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, frame in enumerate(frames):
        groups.setdefault(tuple(frame.columns), []).append(index)
    for indices in groups.values():
        split = None
        if len(indices) > 1:
            members = [frames[index] for index in indices]
            try:
                split = split_rows(predict(pd.concat(members, ignore_index=True)), [len(f) for f in members])
            except ScoringError:
                split = None
        for position, index in enumerate(indices):
            results[index] = split[position] if split is not None else _predict_alone(predict, frames[index])
    return results


def split_rows(predictions: Any, sizes: list[int]) -> list[Any] | None:
    """The predictions cut back into one part per request, or None when they are not one row per input row."""
    total = sum(sizes)
    if not isinstance(predictions, np.ndarray | pd.Series | pd.DataFrame | list) or len(predictions) != total:
        return None
    spans = list(itertools.pairwise(np.cumsum([0, *sizes]).tolist()))
    if isinstance(predictions, pd.Series | pd.DataFrame):
        return [predictions.iloc[start:end].reset_index(drop=True) for start, end in spans]
    return [predictions[start:end] for start, end in spans]


def _predict_alone(predict: Predict, frame: pd.DataFrame) -> Any:
    try:
        return predict(frame)
    except ScoringError as exc:
        return exc
