"""Reading reference and current data from CSV or Parquet files."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

PARQUET_SUFFIXES = {".parquet", ".pq"}
CSV_SUFFIXES = {".csv", ".tsv", ".txt"}


def read_table(path: str | Path) -> pa.Table:
    """A CSV (comma, or tab for .tsv) or Parquet file as an Arrow table, chosen by the file suffix."""
    # Imported here: the engine itself never reads files, and the readers cost ~10 MB once imported.
    import pyarrow.csv
    import pyarrow.parquet

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return pyarrow.parquet.read_table(path)
    if suffix in CSV_SUFFIXES:
        delimiter = "\t" if suffix == ".tsv" else ","
        return pyarrow.csv.read_csv(path, parse_options=pyarrow.csv.ParseOptions(delimiter=delimiter))
    raise ValueError(f"{path}: expected a .csv, .tsv or .parquet file")
