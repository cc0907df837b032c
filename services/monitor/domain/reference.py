"""A monitor's reference data: read once, turned into a column schema and a stored drift profile.

The schema says, per monitored column, its drift type, whether the user named that type (`named`), and
the physical type logged rows are stored with (`integer`, `float`, `bool`, `string`: the reference's
own), so the current window reaches the engine with the types the reference was profiled with. A named
type is what every check tests the column as; otherwise `type` is the reference's own, and each check
types the column from its window, as Evidently does (see the engine's `compute_drift_report`).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq

from services.monitor.domain.drift import ColumnType, build_reference_profile
from services.monitor.domain.drift.columns import infer_column_type
from shared.core.artifacts import ArtifactStore, safe_key
from shared.core.errors import InvalidParameter

# Columns every stored prediction batch carries besides the monitored ones.
REQUEST_ID = "__request_id"
LOGGED_AT = "__logged_at"
RESERVED = (REQUEST_ID, LOGGED_AT)
TESTED = (ColumnType.NUMERICAL, ColumnType.CATEGORICAL)
# Monitored when listed in `features`: a window whose values repeat enough is tested as categorical.
TYPED_BY_WINDOW = (*TESTED, ColumnType.TEXT)
_PARQUET_MAGIC = b"PAR1"


def read_table_bytes(data: bytes, what: str) -> pa.Table:
    """CSV or Parquet bytes (told apart by Parquet's magic number) as an Arrow table; 400 if unreadable."""
    if not data:
        raise InvalidParameter(f"{what} is empty")
    try:
        if data[:4] == _PARQUET_MAGIC:
            table = pq.read_table(pa.BufferReader(data))
        else:
            table = pyarrow.csv.read_csv(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as error:
        raise InvalidParameter(f"{what} is not readable CSV or Parquet: {error}") from None
    names = table.column_names
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidParameter(f"{what} repeats column names {repeated}")
    return table


def physical_type(data_type: pa.DataType) -> str:
    if pa.types.is_boolean(data_type):
        return "bool"
    if pa.types.is_integer(data_type):
        return "integer"
    if pa.types.is_floating(data_type) or pa.types.is_decimal(data_type):
        return "float"
    return "string"


ARROW_TYPES = {"bool": pa.bool_(), "integer": pa.int64(), "float": pa.float64(), "string": pa.string()}


def infer_schema(
    table: pa.Table,
    *,
    overrides: Mapping[str, str],
    features: list[str] | None,
    prediction_column: str,
) -> dict[str, Any]:
    """Monitored columns with their drift and physical types. Inferred as Evidently does; `overrides`
    win; columns that are neither numerical nor categorical (ids, free text, dates) are left out unless
    overridden or listed in `features` (dates and other types need an override there)."""
    names = table.column_names
    if len(set(names)) != len(names):
        raise InvalidParameter(
            f"The reference data repeats column names: {sorted({n for n in names if names.count(n) > 1})}"
        )
    reserved = sorted(set(names) & set(RESERVED))
    if reserved:
        raise InvalidParameter(f"Column names {reserved} are reserved")
    wanted = list(features) if features is not None else names
    unknown = sorted((set(wanted) | set(overrides)) - set(names))
    if unknown:
        raise InvalidParameter(f"Columns {unknown} are not in the reference data (it has {names})")
    columns: dict[str, dict[str, str | bool]] = {}
    for name in wanted:
        named = name in overrides
        kind = ColumnType(overrides[name]) if named else infer_column_type(table, name)
        if kind not in TESTED and (features is None or kind not in TYPED_BY_WINDOW):
            if features is None:
                continue
            raise InvalidParameter(f"Column '{name}' looks like {kind.value} data: give its type in `columns`")
        physical = physical_type(table.schema.field(name).type)
        if kind == ColumnType.NUMERICAL and physical not in ("integer", "float"):
            raise InvalidParameter(f"Column '{name}' holds {physical} values and cannot be numerical")
        columns[name] = {"type": kind.value, "dtype": physical, "named": named}
    if not columns:
        raise InvalidParameter("The reference data has no numerical or categorical column to monitor")
    prediction = prediction_column if prediction_column in columns else None
    return {"columns": columns, "prediction_column": prediction}


def profile_bytes(table: pa.Table, schema: Mapping[str, Any]) -> bytes:
    columns = schema["columns"]
    profile = build_reference_profile(table.select(list(columns)), column_types=named_types(schema))
    return profile.to_bytes()


def named_types(schema: Mapping[str, Any]) -> dict[str, str]:
    """The column types the user named (schemas written before `named` existed name none)."""
    return {name: spec["type"] for name, spec in schema["columns"].items() if spec.get("named")}


# The start of a stored file's name: when it was written (UTC).
KEY_TIME_FORMAT = "%Y%m%dT%H%M%S"


def monitor_prefix(organization_id: uuid.UUID, project_id: uuid.UUID, monitor_id: uuid.UUID) -> str:
    """Where a monitor's files live in the artifact store (tenant first, like tracking's keys)."""
    return safe_key(organization_id.hex, project_id.hex, "monitors", monitor_id.hex)


def reference_folder(prefix: str) -> str:
    """Where the versions of a monitor's reference (data and profile) are kept."""
    return safe_key(prefix, "reference")


def store_reference(
    store: ArtifactStore, prefix: str, table: pa.Table, schema: Mapping[str, Any], now: datetime
) -> tuple[str, str]:
    """Keep the reference (as Parquet, to re-profile when the schema changes) and its profile; returns
    both keys. New keys per version, so a running check keeps reading the profile it started with; the
    names start with the writing time, so upkeep can tell a replaced version past its use."""
    version = f"{now.strftime(KEY_TIME_FORMAT)}-{uuid.uuid4().hex}"
    reference_key = safe_key(reference_folder(prefix), f"{version}.parquet")
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    store.write(reference_key, [buffer.getvalue()])
    profile_key = safe_key(reference_folder(prefix), f"{version}.profile.npz")
    store.write(profile_key, [profile_bytes(table, schema)])
    return reference_key, profile_key


def read_stored(store: ArtifactStore, key: str) -> bytes:
    return b"".join(store.read(key))
