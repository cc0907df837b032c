"""The drift report: plain dataclasses whose `to_dict()` is JSON-safe (no NaN or infinity, only null)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ColumnStatus(StrEnum):
    OK = "ok"
    # The column cannot be tested (type, method, values): see `reason`.
    NOT_TESTED = "not_tested"
    # Too few current values for a test; not an error, the next window may have enough.
    INSUFFICIENT_DATA = "insufficient_data"


@dataclass
class NewCategories:
    count: int
    share: float
    examples: list[str]


@dataclass
class ColumnDrift:
    column_type: str
    status: ColumnStatus
    method: str | None = None
    score: float | None = None
    threshold: float | None = None
    drift: bool = False
    reason: str | None = None
    missing_share: float | None = None
    new_categories: NewCategories | None = None
    reference: dict[str, Any] | None = None
    current: dict[str, Any] | None = None


@dataclass
class DriftReport:
    dataset_drift: bool
    # Share of tested columns that drifted; `drift_share_threshold` is the share that means dataset drift.
    drift_share: float
    drift_share_threshold: float
    number_of_columns: int
    number_of_drifted_columns: int
    status: ColumnStatus
    reference_rows: int
    current_rows: int
    columns: dict[str, ColumnDrift] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_drift": self.dataset_drift,
            "drift_share": json_float(self.drift_share),
            "drift_share_threshold": json_float(self.drift_share_threshold),
            "number_of_columns": self.number_of_columns,
            "number_of_drifted_columns": self.number_of_drifted_columns,
            "status": self.status.value,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "columns": {name: column_dict(column) for name, column in self.columns.items()},
        }


def column_from_dict(data: dict[str, Any]) -> ColumnDrift:
    """A column's result from its `to_dict()` form (a shard's results, stored as JSON)."""
    new = data["new_categories"]
    return ColumnDrift(
        column_type=data["column_type"],
        status=ColumnStatus(data["status"]),
        method=data["method"],
        score=data["score"],
        threshold=data["threshold"],
        drift=data["drift"],
        reason=data["reason"],
        missing_share=data["missing_share"],
        new_categories=None if new is None else NewCategories(**new),
        reference=data["reference"],
        current=data["current"],
    )


def column_dict(column: ColumnDrift) -> dict[str, Any]:
    new = column.new_categories
    return {
        "column_type": column.column_type,
        "method": column.method,
        "score": json_float(column.score),
        "threshold": json_float(column.threshold),
        "drift": column.drift,
        "status": column.status.value,
        "reason": column.reason,
        "missing_share": json_float(column.missing_share),
        "new_categories": None
        if new is None
        else {"count": new.count, "share": json_float(new.share), "examples": new.examples},
        "reference": column.reference,
        "current": column.current,
    }


def json_float(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
