"""Reading one column of a pandas DataFrame or pyarrow Table into a `Distribution`.

Every drift test works on distinct values with their counts, never on raw rows: numbers are sorted once
and run-length encoded, labels value-counted. The representation does not depend on the type a column is
tested as, so a stored reference serves whichever type the current window gives the column.

pandas is imported only when a DataFrame is given (it is an Arrow table everywhere in the service, and
importing pandas costs ~50 MB of resident memory in a worker that does not otherwise need it).
"""

from __future__ import annotations

import math
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
# Values handled at once by the standard deviation (512 KB of float64: the block stays in cache).
MOMENT_BLOCK = 1 << 16


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

    @property
    def holds_numbers(self) -> bool:
        """Numbers (float64), which every test takes; labels only the categorical ones."""
        return self.values.dtype.kind == "f"

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


def infer_column_type(frame: Frame, name: str, values: Distribution | None = None) -> ColumnType:
    """Evidently 0.7's inference (`evidently.core.datasets.infer_column_type`), for pandas and Arrow.

    `values`, the column's `column_values` when already read, saves counting its distinct values again.
    Deviations, on purpose: nullable pandas dtypes (`Int64`, `Float64`, `boolean`) and unsigned integers
    are treated like their plain counterparts instead of "unknown".
    """
    if isinstance(frame, pa.Table):
        return _infer_arrow(frame.column(name), values)
    return _infer_pandas(frame[name], values)


def _infer_pandas(series: pd.Series, values: Distribution | None) -> ColumnType:
    dtype_name = series.dtype.name.lower()
    if dtype_name.startswith("float"):
        return ColumnType.NUMERICAL
    if dtype_name.startswith(("int", "uint")):
        distinct = values.distinct if values is not None else series.nunique()
        return ColumnType.CATEGORICAL if distinct <= INTEGER_CARDINALITY_LIMIT else ColumnType.NUMERICAL
    if dtype_name in ("string", "str"):
        return _text_or_categorical(series, values)
    if dtype_name == "object":
        return _text_or_categorical(series, values) if _holds_strings(series) else ColumnType.UNKNOWN
    if dtype_name in ("bool", "boolean", "category"):
        return ColumnType.CATEGORICAL
    if dtype_name.startswith("datetime"):
        return ColumnType.DATETIME
    return ColumnType.UNKNOWN


def _infer_arrow(column: pa.ChunkedArray, values: Distribution | None) -> ColumnType:
    arrow_type = column.type
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return ColumnType.NUMERICAL
    if pa.types.is_integer(arrow_type):
        # pandas turns an integer column with nulls into float64, which Evidently calls numerical.
        if column.null_count:
            return ColumnType.NUMERICAL
        distinct = values.distinct if values is not None else pc.count_distinct(column).as_py()
        return ColumnType.CATEGORICAL if distinct <= INTEGER_CARDINALITY_LIMIT else ColumnType.NUMERICAL
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return _text_or_categorical(column, values)
    if pa.types.is_boolean(arrow_type) or pa.types.is_dictionary(arrow_type):
        return ColumnType.CATEGORICAL
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return ColumnType.DATETIME
    return ColumnType.UNKNOWN


def _text_or_categorical(column: pd.Series | pa.ChunkedArray, values: Distribution | None) -> ColumnType:
    """Text when more than half of the present values are distinct."""
    if values is not None:
        distinct, present = values.distinct, values.size
    elif isinstance(column, pa.ChunkedArray):
        distinct, present = pc.count_distinct(column).as_py(), len(column) - column.null_count
    else:
        distinct, present = column.nunique(), column.count()
    return ColumnType.TEXT if distinct > present * 0.5 else ColumnType.CATEGORICAL


def _holds_strings(series: pd.Series) -> bool:
    """Evidently's test for an object column of text: its first and last present values are str."""
    present = series.dropna()
    return not present.empty and isinstance(present.iloc[0], str) and isinstance(present.iloc[-1], str)


def has_values(frame: Frame, name: str) -> bool:
    """Whether the column holds anything but missing values (a window without any cannot type it)."""
    if isinstance(frame, pa.Table):
        column = frame.column(name)
        return column.null_count < len(column)
    return bool(frame[name].count())


def column_values(frame: Frame, name: str, any_type: bool = False) -> Distribution | None:
    """The column's distinct values with their counts, whatever type it is tested as.

    Numbers (integers, floats, booleans) as float64 with their moments, so one reading serves both the
    numerical and the categorical tests (1 == 1.0 == True, as in Evidently's category sets); labels as
    text. Other columns (dates, lists) give None unless `any_type`, which reads their values as labels.
    """
    if isinstance(frame, pa.Table):
        return _arrow_values(frame.column(name), any_type)
    return _pandas_values(frame[name], any_type)


def _pandas_values(series: pd.Series, any_type: bool) -> Distribution | None:
    import pandas as pd

    dtype = series.dtype
    if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        integer_dtype = pd.api.types.is_integer_dtype(dtype) and not series.hasnans
        raw = series.to_numpy(dtype=np.float64, na_value=np.nan)
        return distribution_from_numbers(raw, integer_dtype=integer_dtype)
    textual = _holds_strings(series) if pd.api.types.is_object_dtype(dtype) else pd.api.types.is_string_dtype(dtype)
    if not (textual or isinstance(dtype, pd.CategoricalDtype) or any_type):
        return None
    counts = series.value_counts(dropna=True, sort=False)
    labels = np.asarray(counts.index.astype(str), dtype=np.str_)
    return _label_counts(labels, counts.to_numpy(dtype=np.int64), len(series), int(series.isna().sum()))


def _arrow_values(column: pa.ChunkedArray, any_type: bool) -> Distribution | None:
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    arrow_type = column.type
    if (
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_decimal(arrow_type)
        or pa.types.is_boolean(arrow_type)
    ):
        integer_dtype = pa.types.is_integer(arrow_type) and column.null_count == 0
        raw = float64_values(column)
        # A copy made here (chunks joined, nulls filled) is this function's own: sorted where it lies.
        return distribution_from_numbers(raw, integer_dtype=integer_dtype, owned=raw.flags.owndata)
    if not (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or any_type):
        return None
    value_counts = pc.value_counts(pc.cast(column, pa.string()))
    values = value_counts.field("values")
    keep = pc.is_valid(values)
    # One entry per distinct label; to_pylist, not to_numpy, which would import pandas.
    labels = np.array(values.filter(keep).to_pylist(), dtype=np.str_)
    counts = np.array(value_counts.field("counts").filter(keep).to_pylist(), dtype=np.int64)
    return _label_counts(labels, counts, len(column), column.null_count)


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


def distribution_from_numbers(raw: np.ndarray, integer_dtype: bool = False, owned: bool = False) -> Distribution:
    """`raw` as distinct values with counts and moments; `owned`: the array is the caller's to give away
    (a copy it made), so it is sorted in place instead of copied first."""
    # A finite sum means every value is finite (NaN and inf carry into the sum): no mask, no filtered copy.
    # np.mean sums the same way, so the mean is the sum's.
    total = float(np.add.reduce(raw)) if raw.size else 0.0
    if math.isfinite(total):
        missing_count, finite = 0, raw
    else:
        missing_count = int(np.count_nonzero(np.isnan(raw)))
        finite = raw[np.isfinite(raw)]
        owned = True
    mean = std = None
    if finite.size:
        # Moments on the unsorted values, as Evidently computes them (its Wasserstein norm is np.std).
        mean = total / finite.size if finite is raw else float(finite.mean())
        std = _standard_deviation(finite, mean)
    if owned:
        finite.sort()
    else:
        # A sorted copy: the caller's array is often a read-only view of Arrow's buffer.
        finite = np.sort(finite)
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


def _standard_deviation(values: np.ndarray, mean: float) -> float:
    """`np.std(values)` (population, as Evidently's), a block at a time: np.std makes a temporary as
    large as the values (80 MB for 10 million), and a fresh buffer that size costs the kernel as much
    time to map and clear as the arithmetic costs. Equal to np.std up to rounding (the squares are
    summed in another order)."""
    squares = 0.0
    scratch = np.empty(min(MOMENT_BLOCK, values.size))
    for first in range(0, values.size, MOMENT_BLOCK):
        block = values[first : first + MOMENT_BLOCK]
        deviations = scratch[: block.size]
        np.subtract(block, mean, out=deviations)
        np.multiply(deviations, deviations, out=deviations)
        squares += float(np.add.reduce(deviations))
    return math.sqrt(squares / values.size)


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


def _label_counts(labels: np.ndarray, counts: np.ndarray, rows: int, missing: int) -> Distribution:
    # Sorts the labels and merges objects that print the same (1 and "1" in an object column).
    values, inverse = np.unique(labels, return_inverse=True)
    merged = np.bincount(inverse, weights=counts, minlength=len(values)).astype(np.int64)
    return Distribution(values=values, counts=merged, row_count=rows, missing_count=missing, infinite_count=0)
