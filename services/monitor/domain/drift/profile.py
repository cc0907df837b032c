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
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

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
    # A read profile loads each column's values when it is looked up (see `StoredColumns`).
    columns: Mapping[str, ColumnProfile]

    def to_bytes(self) -> bytes:
        """A compressed numpy .npz archive; loads without pickle."""
        buffer = io.BytesIO()
        with ProfileWriter(buffer, self.row_count) as writer:
            for name, column in self.columns.items():
                writer.add(name, column)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ReferenceProfile:
        return cls.read(io.BytesIO(data))

    @classmethod
    def read(cls, file: BinaryIO) -> ReferenceProfile:
        """The profile in a seekable file, which must stay open while the profile is used: only the
        header is read here, each column's values when the column is looked up."""
        try:
            archive = np.load(file, allow_pickle=False)
            header = json.loads(archive["header"].tobytes())
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise ProfileFormatError("not a drift reference profile") from error
        if header.get("format") != PROFILE_FORMAT or header.get("version") not in READABLE_VERSIONS:
            raise ProfileFormatError(f"unsupported profile {header.get('format')} v{header.get('version')}")
        return cls(row_count=header["row_count"], columns=StoredColumns(archive, header))


class StoredColumns(Mapping[str, ColumnProfile]):
    """A stored profile's columns, each read from the archive when looked up and not kept: a check over
    many columns holds one column's reference values at a time, not the whole profile."""

    def __init__(self, archive: Any, header: dict[str, Any]) -> None:
        self._archive = archive
        self._version = header["version"]
        self._entries = {entry["name"]: (index, entry) for index, entry in enumerate(header["columns"])}

    def __getitem__(self, name: str) -> ColumnProfile:
        index, entry = self._entries[name]
        distribution = None
        if f"values_{index}" in self._archive:
            distribution = Distribution(
                values=self._archive[f"values_{index}"],
                counts=self._archive[f"counts_{index}"],
                row_count=entry["row_count"],
                missing_count=entry["missing_count"],
                infinite_count=entry["infinite_count"],
                integer_dtype=entry["integer_dtype"],
                mean=entry["mean"],
                std=entry["std"],
            )
        if self._version == 1:
            fixed = ColumnType(entry["column_type"])
            return ColumnProfile(fixed, distribution, named_type=fixed)
        named = entry["named_type"]
        return ColumnProfile(
            ColumnType(entry["reference_type"]), distribution, None if named is None else ColumnType(named)
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class ProfileWriter:
    """Writes a profile into a .npz archive (a zip of .npy members, what `np.savez_compressed` writes)
    one column at a time, so saving a profile never needs all of its columns in memory at once."""

    def __init__(self, file: BinaryIO, row_count: int) -> None:
        self._zip = zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True)
        self._row_count = row_count
        self._described: list[dict[str, object]] = []

    def add(self, name: str, column: ColumnProfile) -> None:
        index = len(self._described)
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
            self._write(f"values_{index}", distribution.values)
            # Most counts are small (1 for continuous data): store them in the narrowest integer type.
            self._write(
                f"counts_{index}",
                distribution.counts.astype(np.min_scalar_type(int(distribution.counts.max(initial=0)))),
            )
        self._described.append(entry)

    def _write(self, key: str, array: np.ndarray) -> None:
        with self._zip.open(f"{key}.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)

    def close(self) -> None:
        header = {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, "row_count": self._row_count}
        header["columns"] = self._described
        self._write("header", np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
        self._zip.close()

    def __enter__(self) -> ProfileWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is None:
            self.close()
        else:
            # No header: a profile cut short reads as "not a drift reference profile", not as a smaller one.
            self._zip.close()


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
    profiled = {name: profile_column(reference, name, named.get(name)) for name in names}
    return ReferenceProfile(row_count=row_count(reference), columns=profiled)


def profile_column(reference: Frame, name: str, named_type: ColumnType | None) -> ColumnProfile:
    values = column_values(reference, name, any_type=named_type is not None)
    reference_type = infer_column_type(reference, name, values)
    if reference_type in UNPROFILED_TYPES and named_type is None:
        values = None
    return ColumnProfile(reference_type, values, named_type)
