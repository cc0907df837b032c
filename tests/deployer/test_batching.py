"""Splitting a merged batch back per request, and one request the model cannot take failing alone."""

from __future__ import annotations

import numpy as np
import pandas as pd

from services.deployer.model_server import parse_batching_header
from services.deployer.model_server.batching import predict_batch, split_rows
from services.deployer.model_server.scoring import ScoringError


def _frames() -> list[pd.DataFrame]:
    return [pd.DataFrame({"x": [1.0, 2.0]}), pd.DataFrame({"x": [3.0]}), pd.DataFrame({"x": [4.0, 5.0, 6.0]})]


def test_one_model_call_per_batch_and_each_request_gets_its_rows():
    calls = []

    def predict(frame: pd.DataFrame):
        calls.append(len(frame))
        return frame["x"].to_numpy() * 10

    results = predict_batch(predict, _frames())

    assert calls == [6]
    assert [result.tolist() for result in results] == [[10.0, 20.0], [30.0], [40.0, 50.0, 60.0]]


def test_a_request_the_model_fails_on_fails_alone():
    def predict(frame: pd.DataFrame):
        if (frame["x"] == 3.0).any():
            raise ScoringError(500, "INTERNAL_ERROR", "the model raised")
        return frame["x"].to_numpy()

    results = predict_batch(predict, _frames())

    assert results[0].tolist() == [1.0, 2.0] and results[2].tolist() == [4.0, 5.0, 6.0]
    assert isinstance(results[1], ScoringError) and results[1].status_code == 500


def test_answers_not_one_row_per_input_row_are_scored_per_request():
    calls = []

    def predict(frame: pd.DataFrame):
        calls.append(len(frame))
        return {"mean": float(frame["x"].mean())}

    results = predict_batch(predict, _frames())

    assert calls == [6, 2, 1, 3]
    assert results == [{"mean": 1.5}, {"mean": 3.0}, {"mean": 5.0}]


def test_frames_and_series_split_with_fresh_indexes():
    parts = split_rows(pd.Series([1, 2, 3]), [1, 2])
    assert [part.tolist() for part in parts] == [[1], [2, 3]]
    assert parts[1].index.tolist() == [0, 1]
    assert split_rows(np.arange(3), [1, 1]) is None


def test_the_batching_header_asks_for_batching_only_when_it_makes_sense():
    assert parse_batching_header("16;2.5") == (16, 0.0025)
    assert parse_batching_header("1;5") is None
    assert parse_batching_header("lots;5") is None
    assert parse_batching_header("8;5000") is None
