"""The reference side of a drift check, profiled once and stored as bytes.

A scheduled check then reads only the current window: the profile holds, per column, the sorted
distinct values with their counts (exact, so every statistic equals the one computed on raw data) and
the moments Evidently uses. Its size grows with the number of distinct values, not of rows.

The profile does not fix how a column is tested: as in Evidently, the current window decides a
column's type (see `engine`), so the stored values serve the numerical and the categorical tests
alike. Only a type the user named is kept, and then wins.
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
    column_names,
    column_values,
    infer_column_type,
    row_count,
    with_text_names,
)

PROFILE_FORMAT = "tessera.drift.reference_profile"
PROFILE_VERSION = 2
# Version 1 stored one type per column, fixed when the profile was made; it is read as a named type.
READABLE_VERSIONS = (1, PROFILE_VERSION)
# Reference columns of these types keep no values unless the user names a tested type for them.
UNPROFILED_TYPES = (ColumnType.DATETIME, ColumnType.UNKNOWN)


class ProfileFormatError(ValueError):
    """The bytes are not a reference profile this version can read."""


@dataclass(frozen=True, eq=False)
class ColumnProfile:
    # The type the reference itself has (Evidently's inference): reported when the current window
    # cannot type the column (it is missing or empty).
    reference_type: ColumnType
    # None for dates and columns of unknown type, which are never tested unless named.
    distribution: Distribution | None
    # The type the user named for the column; it wins over the current window's.
    named_type: ColumnType | None = None


@dataclass(frozen=True, eq=False)
class ReferenceProfile:
    row_count: int
    columns: dict[str, ColumnProfile]

    def to_bytes(self) -> bytes:
        """A compressed numpy .npz archive; loads without pickle."""
        arrays: dict[str, np.ndarray] = {}
        described = []
        for index, (name, column) in enumerate(self.columns.items()):
            entry: dict[str, object] = {
                "name": name,
                "reference_type": column.reference_type.value,
                "named_type": None if column.named_type is None else column.named_type.value,
            }
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
        if header.get("format") != PROFILE_FORMAT or header.get("version") not in READABLE_VERSIONS:
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
            if header["version"] == 1:
                fixed = ColumnType(entry["column_type"])
                columns[entry["name"]] = ColumnProfile(fixed, distribution, named_type=fixed)
                continue
            named = entry["named_type"]
            columns[entry["name"]] = ColumnProfile(
                ColumnType(entry["reference_type"]), distribution, None if named is None else ColumnType(named)
            )
        return cls(row_count=header["row_count"], columns=columns)


def build_reference_profile(
    reference: Frame,
    column_types: Mapping[str, ColumnType | str] | None = None,
    columns: Sequence[str] | None = None,
) -> ReferenceProfile:
    """Profile `reference` once. `column_types` names the type of some columns (it then wins over the
    type each current window gives them); `columns` restricts the profile to those columns (all by default)."""
    reference = with_text_names(reference)
    named = {name: ColumnType(kind) for name, kind in (column_types or {}).items()}
    names = list(columns) if columns is not None else column_names(reference)
    profiled = {}
    for name in names:
        named_type = named.get(name)
        values = column_values(reference, name, any_type=named_type is not None)
        reference_type = infer_column_type(reference, name, values)
        if reference_type in UNPROFILED_TYPES and named_type is None:
            values = None
        profiled[name] = ColumnProfile(reference_type, values, named_type)
    return ReferenceProfile(row_count=row_count(reference), columns=profiled)
