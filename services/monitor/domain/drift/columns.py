"""Reading one column of a pandas DataFrame or pyarrow Table into a `Distribution`.

Every drift test works on distinct values with their counts, never on raw rows: a numerical column is
sorted once and run-length encoded, a categorical one is value-counted. Both sides of a comparison use
the same representation, so the reference side can be stored and reused.

pandas is imported only when a DataFrame is given (it is an Arrow table everywhere in the service, and
importing pandas costs ~50 MB of resident memory in a worker that does not otherwise need it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    import pandas as pd

Frame: TypeAlias = "pd.DataFrame | pa.Table"

# Evidently 0.7 treats an integer column with at most this many distinct values as categorical.
INTEGER_CARDINALITY_LIMIT = 10


class ColumnType(StrEnum):
    NUMERICAL = "numerical"
    CATEGORICAL = "categorical"
    TEXT = "text"
    DATETIME = "datetime"
    UNKNOWN = "unknown"


@dataclass(frozen=True, eq=False)
class Distribution:
    """One side of one column, reduced to what the tests need.

    `values` are the sorted distinct values (float64 for numbers, str for labels) and `counts` how often
    each occurs; missing (null/NaN) and infinite values are already removed and only counted.
    """

    values: np.ndarray
    counts: np.ndarray
    row_count: int
    missing_count: int
    infinite_count: int
    # numpy's Sturges rule widens bins to >= 1 for integer data, so Evidently's bins depend on it.
    integer_dtype: bool = False
    mean: float | None = None
    std: float | None = None

    def value_at(self, ranks: np.ndarray) -> np.ndarray:
        """The values at these 0-based positions of the sorted sample."""
        if self.size == self.distinct:
            return self.values[ranks]
        return self.values[np.searchsorted(np.cumsum(self.counts, dtype=np.int64), ranks, side="right")]

    def count_before(self, positions: np.ndarray) -> np.ndarray:
        """How many values lie before each position in `values`: the CDF numerators."""
        if self.size == self.distinct:
            # Every count is 1 (continuous data): no cumulative sum needed.
            return np.asarray(positions, dtype=np.int64)
        return np.concatenate(([0], np.cumsum(self.counts, dtype=np.int64)))[positions]

    @cached_property
    def size(self) -> int:
        """Number of values that take part in the test."""
        return int(self.counts.sum(dtype=np.int64))

    @property
    def distinct(self) -> int:
        return len(self.values)

    def sorted_values(self) -> np.ndarray:
        """Every value, sorted (the counts expanded again)."""
        return self.values if self.size == self.distinct else np.repeat(self.values, self.counts)


def with_text_names(frame: Frame) -> Frame:
    """Column names as text, as the report keys them (pandas allows any hashable label)."""
    if not isinstance(frame, pa.Table) and not all(isinstance(name, str) for name in frame.columns):
        return frame.rename(columns=str)
    return frame


def column_names(frame: Frame) -> list[str]:
    return (
        [str(name) for name in frame.column_names]
        if isinstance(frame, pa.Table)
        else [str(name) for name in frame.columns]
    )


def row_count(frame: Frame) -> int:
    return frame.num_rows if isinstance(frame, pa.Table) else len(frame)


def infer_column_type(frame: Frame, name: str) -> ColumnType:
    """Evidently 0.7's inference (`evidently.core.datasets.infer_column_type`), for pandas and Arrow.

    Deviations, on purpose: nullable pandas dtypes (`Int64`, `Float64`, `boolean`) and unsigned integers
    are treated like their plain counterparts instead of "unknown".
    """
    if isinstance(frame, pa.Table):
        return _infer_arrow(frame.column(name))
    return _infer_pandas(frame[name])


def _infer_pandas(series: pd.Series) -> ColumnType:
    dtype_name = series.dtype.name.lower()
    if dtype_name.startswith("float"):
        return ColumnType.NUMERICAL
    if dtype_name.startswith(("int", "uint")):
        if series.nunique() <= INTEGER_CARDINALITY_LIMIT:
            return ColumnType.CATEGORICAL
        return ColumnType.NUMERICAL
    if dtype_name in ("string", "str"):
        return _text_or_categorical(series.nunique(), series.count())
    if dtype_name == "object":
        present = series.dropna()
        if present.empty:
            return ColumnType.UNKNOWN
        if isinstance(present.iloc[0], str) and isinstance(present.iloc[-1], str):
            return _text_or_categorical(series.nunique(), series.count())
        return ColumnType.UNKNOWN
    if dtype_name in ("bool", "boolean", "category"):
        return ColumnType.CATEGORICAL
    if dtype_name.startswith("datetime"):
        return ColumnType.DATETIME
    return ColumnType.UNKNOWN


def _infer_arrow(column: pa.ChunkedArray) -> ColumnType:
    arrow_type = column.type
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return ColumnType.NUMERICAL
    if pa.types.is_integer(arrow_type):
        # pandas turns an integer column with nulls into float64, which Evidently calls numerical.
        if column.null_count == 0 and pc.count_distinct(column).as_py() <= INTEGER_CARDINALITY_LIMIT:
            return ColumnType.CATEGORICAL
        return ColumnType.NUMERICAL
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        non_null = len(column) - column.null_count
        return _text_or_categorical(pc.count_distinct(column).as_py(), non_null)
    if pa.types.is_boolean(arrow_type) or pa.types.is_dictionary(arrow_type):
        return ColumnType.CATEGORICAL
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return ColumnType.DATETIME
    return ColumnType.UNKNOWN


def _text_or_categorical(distinct: int, non_null: int) -> ColumnType:
    return ColumnType.TEXT if distinct > non_null * 0.5 else ColumnType.CATEGORICAL


def numerical_distribution(frame: Frame, name: str) -> Distribution | None:
    """Sorted distinct finite values with counts; None when the column does not hold numbers."""
    if isinstance(frame, pa.Table):
        column = frame.column(name)
        if not (
            pa.types.is_floating(column.type) or pa.types.is_integer(column.type) or pa.types.is_decimal(column.type)
        ):
            return None
        integer_dtype = pa.types.is_integer(column.type) and column.null_count == 0
        raw = float64_values(column)
    else:
        import pandas as pd

        series = frame[name]
        if not pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
            return None
        integer_dtype = pd.api.types.is_integer_dtype(series.dtype) and not series.hasnans
        raw = series.to_numpy(dtype=np.float64, na_value=np.nan)
    return distribution_from_numbers(raw, integer_dtype=integer_dtype)


def float64_values(column: pa.ChunkedArray) -> np.ndarray:
    """Numbers as float64, NaN for nulls; a view of Arrow's buffer for one chunk without nulls.

    From the buffers rather than with `to_numpy`, which goes through pyarrow's pandas conversion and
    imports pandas (~50 MB) in a process that otherwise has no use for it.
    """
    chunks = pc.cast(column, pa.float64()).chunks
    if len(chunks) == 1:
        return _chunk_values(chunks[0])
    return np.concatenate([_chunk_values(chunk) for chunk in chunks]) if chunks else np.zeros(0)


def _chunk_values(chunk: pa.Array) -> np.ndarray:
    end = chunk.offset + len(chunk)
    validity, data = chunk.buffers()
    if data is None:
        return np.zeros(0)
    values = np.frombuffer(data, dtype=np.float64, count=end)[chunk.offset :]
    if not chunk.null_count:
        return values
    valid = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), count=end, bitorder="little")[chunk.offset :]
    return np.where(valid.view(bool), values, np.nan)


def distribution_from_numbers(raw: np.ndarray, integer_dtype: bool = False) -> Distribution:
    missing_count = int(np.count_nonzero(np.isnan(raw)))
    finite = raw[np.isfinite(raw)]
    mean = std = None
    if finite.size:
        # Moments on the unsorted values, as Evidently computes them (its Wasserstein norm is np.std).
        mean = float(finite.mean())
        std = float(finite.std())
    finite.sort()
    values, counts = _run_lengths(finite)
    return Distribution(
        values=values,
        counts=counts,
        row_count=int(raw.size),
        missing_count=missing_count,
        infinite_count=int(raw.size - missing_count - finite.size),
        integer_dtype=integer_dtype,
        mean=mean,
        std=std,
    )


def _run_lengths(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and their counts, the counts in the narrowest unsigned type (1 byte for
    continuous data, where every count is 1 and the values array is reused as is)."""
    size = sorted_values.size
    if size == 0:
        return sorted_values, np.zeros(0, dtype=np.uint8)
    starts_run = np.empty(size, dtype=bool)
    starts_run[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=starts_run[1:])
    if starts_run.all():
        return sorted_values, np.ones(size, dtype=np.uint8)
    starts = np.flatnonzero(starts_run)
    counts = np.diff(np.append(starts, size))
    return sorted_values[starts], counts.astype(np.min_scalar_type(int(counts.max())))


def categorical_distribution(frame: Frame, name: str) -> Distribution:
    """Category counts. Numbers and booleans stay numbers (so 1 == 1.0, as in Evidently's sets)."""
    if isinstance(frame, pa.Table):
        return _arrow_categories(frame.column(name))
    return _pandas_categories(frame[name])


def _pandas_categories(series: pd.Series) -> Distribution:
    import pandas as pd

    row_total = len(series)
    numeric = pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype)
    if numeric:
        raw = series.to_numpy(dtype=np.float64, na_value=np.nan)
        distribution = distribution_from_numbers(raw)
        return Distribution(
            values=distribution.values,
            counts=distribution.counts,
            row_count=row_total,
            missing_count=distribution.missing_count,
            infinite_count=distribution.infinite_count,
        )
    counts = series.value_counts(dropna=True, sort=False)
    labels = np.asarray(counts.index.astype(str), dtype=np.str_)
    return _label_counts(labels, counts.to_numpy(dtype=np.int64), row_total, int(series.isna().sum()))


def _arrow_categories(column: pa.ChunkedArray) -> Distribution:
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type):
        raw = float64_values(column)
        distribution = distribution_from_numbers(raw)
        return Distribution(
            values=distribution.values,
            counts=distribution.counts,
            row_count=len(column),
            missing_count=distribution.missing_count,
            infinite_count=distribution.infinite_count,
        )
    value_counts = pc.value_counts(pc.cast(column, pa.string()))
    values = value_counts.field("values")
    keep = pc.is_valid(values)
    # One entry per distinct label; to_pylist, not to_numpy, which would import pandas.
    labels = np.array(values.filter(keep).to_pylist(), dtype=np.str_)
    counts = np.array(value_counts.field("counts").filter(keep).to_pylist(), dtype=np.int64)
    return _label_counts(labels, counts, len(column), column.null_count)


def _label_counts(labels: np.ndarray, counts: np.ndarray, rows: int, missing: int) -> Distribution:
    # Sorts the labels and merges objects that print the same (1 and "1" in an object column).
    values, inverse = np.unique(labels, return_inverse=True)
    merged = np.bincount(inverse, weights=counts, minlength=len(values)).astype(np.int64)
    return Distribution(values=values, counts=merged, row_count=rows, missing_count=missing, infinite_count=0)
