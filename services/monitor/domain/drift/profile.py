"""The reference side of a drift check, profiled once and stored as bytes.

A scheduled check then reads only the current window: the profile holds, per column, the sorted
distinct values with their counts (exact, so every statistic equals the one computed on raw data) and
the moments Evidently uses. Its size grows with the number of distinct values, not of rows.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from services.monitor.domain.drift.columns import (
    ColumnType,
    Distribution,
    Frame,
    categorical_distribution,
    column_names,
    infer_column_type,
    numerical_distribution,
    row_count,
    with_text_names,
)

PROFILE_FORMAT = "tessera.drift.reference_profile"
PROFILE_VERSION = 1


class ProfileFormatError(ValueError):
    """The bytes are not a reference profile this version can read."""


@dataclass(frozen=True, eq=False)
class ColumnProfile:
    column_type: ColumnType
    # None for columns that are profiled but never tested (text, datetime, unknown), or for a
    # numerical column whose reference values are not numbers.
    distribution: Distribution | None


@dataclass(frozen=True, eq=False)
class ReferenceProfile:
    row_count: int
    columns: dict[str, ColumnProfile]

    def to_bytes(self) -> bytes:
        """A compressed numpy .npz archive; loads without pickle."""
        arrays: dict[str, np.ndarray] = {}
        described = []
        for index, (name, column) in enumerate(self.columns.items()):
            entry: dict[str, object] = {"name": name, "column_type": column.column_type.value}
            distribution = column.distribution
            if distribution is not None:
                entry |= {
                    "row_count": distribution.row_count,
                    "missing_count": distribution.missing_count,
                    "infinite_count": distribution.infinite_count,
                    "integer_dtype": distribution.integer_dtype,
                    "mean": distribution.mean,
                    "std": distribution.std,
                }
                arrays[f"values_{index}"] = distribution.values
                # Most counts are small (1 for continuous data): store them in the narrowest integer type.
                arrays[f"counts_{index}"] = distribution.counts.astype(
                    np.min_scalar_type(int(distribution.counts.max(initial=0)))
                )
            described.append(entry)
        header = {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, "row_count": self.row_count}
        header["columns"] = described
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ReferenceProfile:
        try:
            archive = np.load(io.BytesIO(data), allow_pickle=False)
            header = json.loads(archive["header"].tobytes())
        except (OSError, ValueError, KeyError) as error:
            raise ProfileFormatError("not a drift reference profile") from error
        if header.get("format") != PROFILE_FORMAT or header.get("version") != PROFILE_VERSION:
            raise ProfileFormatError(f"unsupported profile {header.get('format')} v{header.get('version')}")
        columns = {}
        for index, entry in enumerate(header["columns"]):
            distribution = None
            if f"values_{index}" in archive:
                distribution = Distribution(
                    values=archive[f"values_{index}"],
                    counts=archive[f"counts_{index}"],
                    row_count=entry["row_count"],
                    missing_count=entry["missing_count"],
                    infinite_count=entry["infinite_count"],
                    integer_dtype=entry["integer_dtype"],
                    mean=entry["mean"],
                    std=entry["std"],
                )
            columns[entry["name"]] = ColumnProfile(ColumnType(entry["column_type"]), distribution)
        return cls(row_count=header["row_count"], columns=columns)


def build_reference_profile(
    reference: Frame,
    column_types: Mapping[str, ColumnType | str] | None = None,
    columns: Sequence[str] | None = None,
) -> ReferenceProfile:
    """Profile `reference` once. Column types are inferred as Evidently does unless given in
    `column_types`; `columns` restricts the profile to those columns (all by default)."""
    reference = with_text_names(reference)
    overrides = {name: ColumnType(kind) for name, kind in (column_types or {}).items()}
    names = list(columns) if columns is not None else column_names(reference)
    profiled = {}
    for name in names:
        column_type = overrides.get(name) or infer_column_type(reference, name)
        profiled[name] = ColumnProfile(column_type, column_distribution(reference, name, column_type))
    return ReferenceProfile(row_count=row_count(reference), columns=profiled)


def column_distribution(frame: Frame, name: str, column_type: ColumnType) -> Distribution | None:
    """The distribution a column of this type is tested on, or None when it cannot be tested."""
    if column_type == ColumnType.NUMERICAL:
        return numerical_distribution(frame, name)
    if column_type == ColumnType.CATEGORICAL:
        return categorical_distribution(frame, name)
    return None
