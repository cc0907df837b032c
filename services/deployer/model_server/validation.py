"""Input a model must never see: what makes a request the caller's error (4xx) rather than the model's (5xx).

MLflow's scoring server answers 400 for any exception the model raises, so a model that breaks is reported as
bad input. Tessera answers 5xx when the model fails on valid input (that is what a canary is judged on), so
it must first refuse what is invalid whatever the model: an empty batch, and nulls in columns the signature
marks required (MLflow's schema enforcement turns them into NaN and lets them through). Ragged
`dataframe_split` rows are refused where the JSON is parsed (scoring.py), before pandas pads them with NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.types import Schema

EMPTY_BATCH = "The request has no rows to score: send at least one row"
# Rows named in a message, at most: enough to find them, short enough for a log line.
_ROWS_SHOWN = 5


def input_problem(data: Any, input_schema: Schema | None) -> str | None:
    """Why the parsed request cannot be scored, or None when it can."""
    if _row_count(data) == 0:
        return EMPTY_BATCH
    if input_schema is None or input_schema.is_tensor_spec():
        return None
    required = [spec.name for spec in input_schema.inputs if spec.required and spec.name is not None]
    for column in required:
        values = _column(data, column)
        if values is None:
            continue  # a missing column is MLflow's schema enforcement's to report
        nulls = np.flatnonzero(pd.isna(values))
        if nulls.size:
            shown = ", ".join(str(row) for row in nulls[:_ROWS_SHOWN]) + (", ..." if nulls.size > _ROWS_SHOWN else "")
            return (
                f"Column '{column}' is required by the model's signature but has null values "
                f"(row {shown}; {nulls.size} of {_row_count(data)} rows)"
            )
    return None


def _row_count(data: Any) -> int | None:
    if isinstance(data, pd.DataFrame | pd.Series | np.ndarray | list | tuple):
        return len(data)
    if isinstance(data, dict):
        lengths = {len(value) for value in data.values() if isinstance(value, np.ndarray | list | tuple | pd.Series)}
        return min(lengths) if lengths else None
    return None


def _column(data: Any, name: str) -> Any:
    if isinstance(data, pd.DataFrame):
        return data[name].to_numpy() if name in data.columns else None
    if isinstance(data, dict) and name in data:
        return np.asarray(data[name], dtype=object)
    return None
