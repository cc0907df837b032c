"""Drift report from a reference profile and a current window."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.monitor.domain.drift import stats
from services.monitor.domain.drift.columns import (
    ColumnType,
    Distribution,
    Frame,
    column_names,
    column_values,
    has_values,
    infer_column_type,
    row_count,
    with_text_names,
)
from services.monitor.domain.drift.profile import ColumnProfile, ReferenceProfile, build_reference_profile
from services.monitor.domain.drift.report import (
    ColumnDrift,
    ColumnStatus,
    DriftReport,
    NewCategories,
    json_float,
)

# Display histograms have a fixed size, so a report does not grow with the number of rows.
DISPLAY_BINS = 20
DISPLAY_CATEGORIES = 20
NEW_CATEGORY_EXAMPLES = 10
TESTED_TYPES = (ColumnType.NUMERICAL, ColumnType.CATEGORICAL)
_EMPTY = Distribution(np.zeros(0), np.zeros(0, dtype=np.int64), 0, 0, 0)


@dataclass(frozen=True)
class DriftOptions:
    """Method and threshold choices, with Evidently's `DataDriftPreset` precedence: per column, then per
    column type, then for all columns, then the automatic choice and the method's default threshold."""

    drift_share: float = 0.5
    method: str | None = None
    num_method: str | None = None
    cat_method: str | None = None
    per_column_method: Mapping[str, str] = field(default_factory=dict)
    threshold: float | None = None
    num_threshold: float | None = None
    cat_threshold: float | None = None
    per_column_threshold: Mapping[str, float] = field(default_factory=dict)
    # A current column with fewer usable values than this is reported as insufficient data.
    min_current_values: int = 1

    def __post_init__(self) -> None:
        named = [self.method, self.num_method, self.cat_method, *self.per_column_method.values()]
        unknown = sorted({name for name in named if name is not None and name not in stats.METHODS})
        if unknown:
            raise ValueError(f"unknown drift method(s) {unknown}; known: {sorted(stats.METHODS)}")

    def named_method(self, column: str, column_type: ColumnType) -> str | None:
        by_type = self.num_method if column_type == ColumnType.NUMERICAL else self.cat_method
        return self.per_column_method.get(column) or by_type or self.method

    def threshold_for(self, column: str, column_type: ColumnType, method: stats.Method) -> float:
        by_type = self.num_threshold if column_type == ColumnType.NUMERICAL else self.cat_threshold
        for candidate in (self.per_column_threshold.get(column), by_type, self.threshold):
            if candidate is not None:
                return candidate
        return method.default_threshold


def detect_drift(
    reference: Frame,
    current: Frame,
    options: DriftOptions | None = None,
    column_types: Mapping[str, ColumnType | str] | None = None,
) -> DriftReport:
    """One-off comparison; a scheduled check should keep the profile and call `compute_drift_report`."""
    return compute_drift_report(build_reference_profile(reference, column_types), current, options)


def compute_drift_report(
    profile: ReferenceProfile,
    current: Frame,
    options: DriftOptions | None = None,
    column_types: Mapping[str, ColumnType | str] | None = None,
) -> DriftReport:
    """Each column is typed as Evidently 0.7 types it: by the type the user named (in `column_types`, or
    when the profile was built), else by Evidently's inference on the *current* window."""
    options = options or DriftOptions()
    current = with_text_names(current)
    present = set(column_names(current))
    named = {name: ColumnType(kind) for name, kind in (column_types or {}).items()}
    columns = {
        name: column_drift(
            name, column, current if name in present else None, options, named.get(name) or column.named_type
        )
        for name, column in profile.columns.items()
    }
    return assemble_report(columns, options, profile.row_count, row_count(current))


def assemble_report(
    columns: dict[str, ColumnDrift], options: DriftOptions, reference_rows: int, current_rows: int
) -> DriftReport:
    """The dataset verdict over the columns' results, however they were computed (all at once, a few
    columns at a time, or in shards)."""
    tested = [column for column in columns.values() if column.status == ColumnStatus.OK]
    drifted = sum(column.drift for column in tested)
    share = drifted / len(tested) if tested else 0.0
    if tested:
        status = ColumnStatus.OK
    elif current_rows == 0 or any(c.status == ColumnStatus.INSUFFICIENT_DATA for c in columns.values()):
        status = ColumnStatus.INSUFFICIENT_DATA
    else:
        status = ColumnStatus.NOT_TESTED
    return DriftReport(
        dataset_drift=bool(tested) and share >= options.drift_share,
        drift_share=share,
        drift_share_threshold=options.drift_share,
        number_of_columns=len(tested),
        number_of_drifted_columns=drifted,
        status=status,
        reference_rows=reference_rows,
        current_rows=current_rows,
        columns=columns,
    )


def column_drift(
    name: str, column: ColumnProfile, current: Frame | None, options: DriftOptions, named_type: ColumnType | None
) -> ColumnDrift:
    """One column's result; `current` is any frame holding the column (None: the column is missing)."""
    reference = column.distribution
    observed, column_type = _current_values_and_type(name, column, current, named_type)
    result = ColumnDrift(column_type=column_type.value, status=ColumnStatus.NOT_TESTED)
    if column_type not in TESTED_TYPES:
        result.reason = f"{column_type.value} columns are not tested for drift"
        return result
    if reference is None or (column_type == ColumnType.NUMERICAL and not reference.holds_numbers):
        result.reason = (
            "the reference values are not numbers"
            if reference is not None
            else f"the reference column holds {column.reference_type.value} values"
        )
        return result
    if observed is None or (column_type == ColumnType.NUMERICAL and not observed.holds_numbers):
        result.reason = (
            "the column is missing from the current data" if current is None else "the current values are not numbers"
        )
        result.reference = _summary(reference, column_type, _display_histograms(reference, _EMPTY, column_type)[0])
        return result
    result.missing_share = _missing_share(observed)
    ref_histogram, cur_histogram = _display_histograms(reference, observed, column_type)
    result.reference = _summary(reference, column_type, ref_histogram)
    result.current = _summary(observed, column_type, cur_histogram)
    if column_type == ColumnType.CATEGORICAL:
        result.new_categories = _new_categories(reference, observed)
    if reference.size == 0:
        result.reason = "the reference has no usable values (all missing or infinite)"
        return result
    if observed.size < max(options.min_current_values, 1):
        result.status = ColumnStatus.INSUFFICIENT_DATA
        result.reason = f"{observed.size} usable current values, at least {options.min_current_values} needed"
        return result

    named = options.named_method(name, column_type)
    method = stats.METHODS[named] if named else stats.default_method(column_type, reference, observed)
    result.method = method.name
    result.threshold = options.threshold_for(name, column_type, method)
    if named and column_type not in method.column_types:
        result.reason = f"{method.name} does not apply to {column_type.value} columns"
        return result
    score = method.score(reference, observed, column_type)
    if not math.isfinite(score):
        result.reason = f"{method.name} is undefined for these values"
        return result
    result.score = score
    result.drift = method.is_drift(score, result.threshold)
    result.status = ColumnStatus.OK
    return result


def _current_values_and_type(
    name: str, column: ColumnProfile, current: Frame | None, named_type: ColumnType | None
) -> tuple[Distribution | None, ColumnType]:
    """The current window's values and the type the column is tested as: the named one, else the one
    Evidently infers from the current window; the reference's when the window has no values to type it
    by (missing or all missing), so that such a column reads as lacking data rather than untyped."""
    if current is None:
        return None, named_type or column.reference_type
    if named_type is not None:
        return column_values(current, name, any_type=True), named_type
    if not has_values(current, name):
        return column_values(current, name, any_type=True), column.reference_type
    observed = column_values(current, name)
    return observed, infer_column_type(current, name, observed)


def _missing_share(distribution: Distribution) -> float:
    return distribution.missing_count / distribution.row_count if distribution.row_count else 0.0


def _new_categories(reference: Distribution, current: Distribution) -> NewCategories:
    keys, ref_counts, cur_counts = stats.union_counts(reference, current)
    new = (ref_counts == 0) & (cur_counts > 0)
    by_frequency = np.argsort(-cur_counts[new], kind="stable")[:NEW_CATEGORY_EXAMPLES]
    return NewCategories(
        count=int(np.count_nonzero(new)),
        share=float(cur_counts[new].sum() / current.size) if current.size else 0.0,
        examples=[_label(value) for value in keys[new][by_frequency]],
    )


def _summary(side: Distribution, column_type: ColumnType, histogram: dict[str, list[Any]] | None) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "rows": side.row_count,
        "count": side.size,
        "missing_count": side.missing_count,
        "missing_share": json_float(_missing_share(side)),
        "infinite_count": side.infinite_count,
        "unique": side.distinct,
    }
    if side.size and column_type == ColumnType.NUMERICAL:
        low, median, high = _quantiles(side, (0.25, 0.5, 0.75))
        summary |= {
            "min": json_float(side.values[0]),
            "max": json_float(side.values[-1]),
            "mean": json_float(side.mean),
            "std": json_float(side.std),
            "p25": json_float(low),
            "median": json_float(median),
            "p75": json_float(high),
        }
    elif side.size:
        top = int(np.argmax(side.counts))
        summary |= {"top": _label(side.values[top]), "top_share": json_float(side.counts[top] / side.size)}
    summary["histogram"] = histogram
    return summary


def _quantiles(side: Distribution, levels: tuple[float, ...]) -> list[float]:
    """`np.quantile` (linear interpolation) on the rows the counts stand for."""
    positions = np.asarray(levels) * (side.size - 1)
    below = np.floor(positions)
    low = side.value_at(below.astype(np.int64))
    high = side.value_at(np.minimum(below + 1, side.size - 1).astype(np.int64))
    return list(low + (positions - below) * (high - low))


def _display_histograms(
    reference: Distribution, current: Distribution, column_type: ColumnType
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """The same bins for both sides: fixed equal-width bins over both ranges for continuous columns,
    else the most frequent values of both sides, the rest summed as "other"."""
    sides = [part for part in (reference, current) if part.size]
    if not sides:
        return {"labels": [], "counts": []}, {"labels": [], "counts": []}
    if column_type == ColumnType.NUMERICAL and reference.distinct > 20:
        low = min(part.values[0] for part in sides)
        high = max(part.values[-1] for part in sides)
        if low == high:
            low, high = low - 0.5, high + 0.5
        edges = np.linspace(low, high, DISPLAY_BINS + 1)
        return (
            {"edges": edges.tolist(), "counts": stats.histogram(reference, edges).tolist()},
            {"edges": edges.tolist(), "counts": stats.histogram(current, edges).tolist()},
        )
    keys, ref_counts, cur_counts = stats.union_counts(reference, current)
    shown = np.sort(np.argsort(-(ref_counts + cur_counts), kind="stable")[:DISPLAY_CATEGORIES])
    labels = [_label(key) for key in keys[shown]]
    ref_shown, cur_shown = ref_counts[shown].tolist(), cur_counts[shown].tolist()
    if len(keys) > DISPLAY_CATEGORIES:
        labels.append("other")
        ref_shown.append(int(ref_counts.sum() - sum(ref_shown)))
        cur_shown.append(int(cur_counts.sum() - sum(cur_shown)))
    return {"labels": labels, "counts": ref_shown}, {"labels": labels, "counts": cur_shown}


def _label(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float | np.floating) else str(value)
