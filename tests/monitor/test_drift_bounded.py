"""Drift in bounded memory: the report read a few columns at a time equals the one on whole tables, and
`tessera drift` stays under its memory bound on data larger than the bound."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from typer.testing import CliRunner

from services.monitor import cli
from services.monitor.cli import app
from services.monitor.domain.drift import (
    DriftOptions,
    ParquetSource,
    ProfileWriter,
    ReferenceProfile,
    TableSource,
    bounded_drift_report,
    build_reference_profile,
    compute_drift_report,
)
from services.monitor.domain.drift.bounded import plan_groups

ROOT = Path(__file__).resolve().parents[2]
MB = 2**20


def mixed_tables(rows: int, seed: int = 3) -> tuple[pa.Table, pa.Table]:
    """Every path of the engine: continuous, tied and few-valued numbers, ints, labels with a new one,
    missing values, a text column, a column only in the reference."""
    generator = np.random.default_rng(seed)

    def side(shift: float, new_label: bool) -> dict[str, object]:
        labels = ["a", "b", "c", "d"] if new_label else ["a", "b", "c"]
        with_missing = generator.normal(shift, 1, rows)
        with_missing[::7] = np.nan
        return {
            "normal": generator.normal(shift, 1, rows),
            "tied": np.round(generator.normal(50 + 10 * shift, 10, rows)),
            "levels": generator.choice([0.0, 1.0, 2.0], rows),
            "ints": generator.integers(0, 8 + int(10 * shift), rows),
            "missing": with_missing,
            "label": generator.choice(labels, rows).tolist(),
            "text": [f"id-{generator.integers(1 << 40)}" for _ in range(rows)],
        }

    reference = side(0.0, new_label=False) | {"reference_only": generator.normal(0, 1, rows)}
    return pa.table(reference), pa.table(side(0.4, new_label=True))


def test_plan_groups_fits_the_budget_and_keeps_at_least_one_column_per_group():
    sizes = {f"c{index}": (10 * MB, 10 * MB) for index in range(10)}
    # Each column holds 10 + 2 x 10 MB, the largest needs 6 x 10 MB to work on: 3 columns in 150 MB.
    assert [len(group) for group in plan_groups(sizes, 150 * MB)] == [3, 3, 3, 1]
    assert [len(group) for group in plan_groups(sizes, 1)] == [1] * 10
    assert plan_groups(sizes, 10_000 * MB) == [list(sizes)]


@pytest.mark.parametrize("memory_mb", [1, 10_000])
def test_reading_a_column_at_a_time_gives_the_report_on_whole_tables(tmp_path, memory_mb):
    reference, current = mixed_tables(3_000)
    pq.write_table(reference, tmp_path / "reference.parquet", row_group_size=1_000)
    pq.write_table(current, tmp_path / "current.parquet", row_group_size=1_000)
    options = DriftOptions(per_column_method={"normal": "ks"})
    types = {"levels": "numerical"}
    whole = compute_drift_report(build_reference_profile(reference, types), current, options, types).to_dict()
    steps = []
    with (tmp_path / "profile.npz").open("wb") as file, ProfileWriter(file, reference.num_rows) as writer:
        bounded = bounded_drift_report(
            ParquetSource(tmp_path / "reference.parquet"),
            ParquetSource(tmp_path / "current.parquet"),
            memory_mb * MB,
            options,
            types,
            progress=steps.append,
            save_profile=writer,
        )
    assert bounded.to_dict() == whole
    # A budget of 1 byte still computes every column, one per group.
    groups = 8 if memory_mb == 1 else 1
    assert [(step.group, step.groups) for step in steps] == [(number, groups) for number in range(groups + 1)]
    assert steps[-1].columns_done == steps[-1].columns == 8
    # The profile written a column at a time reads back lazily and serves the same report.
    with (tmp_path / "profile.npz").open("rb") as file:
        stored = ReferenceProfile.read(file)
        assert list(stored.columns) == list(reference.column_names)
        again = bounded_drift_report(stored, TableSource(current), memory_mb * MB, options, types)
    assert again.to_dict() == whole
    assert whole["columns"]["reference_only"]["reason"] == "the column is missing from the current data"
    assert whole["columns"]["normal"]["method"] == "ks"


def write_large_parquet(path: Path, rows: int, columns: int, shift: float, seed: int) -> None:
    """Plain float64 (no compression, no dictionary) in row groups of 100k rows, written one at a time."""
    generator = np.random.default_rng(seed)
    names = [f"f{index:02d}" for index in range(columns)]
    schema = pa.schema([(name, pa.float64()) for name in names])
    with pq.ParquetWriter(path, schema, compression="none", use_dictionary=False) as writer:
        for start in range(0, rows, 100_000):
            size = min(100_000, rows - start)
            # Every other column moves; columns of rounded values have ties.
            arrays = [
                pa.array(generator.normal(shift * (index % 2), 1, size).round(1 + index % 3))
                for index in range(columns)
            ]
            writer.write_table(pa.Table.from_arrays(arrays, names=names))


PEAK_RSS = """
import resource, subprocess, sys
completed = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(completed.stderr)
print(completed.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
print(completed.stdout)
"""


@pytest.mark.parametrize(
    ("rows", "columns", "bound_mb"),
    [
        # 200 MB of reference and 200 MB of current data (float64) within a 200 MiB bound.
        (500_000, 50, 200),
        # 1.23 GB of data (614 MB a side) within 1 GiB: whole, both sides would not fit.
        (1_600_000, 48, 1024),
    ],
)
def test_tessera_drift_stays_within_its_memory_bound_on_data_larger_than_the_bound(tmp_path, rows, columns, bound_mb):
    """The whole process's peak RSS, read by a parent that does nothing else (RUSAGE_CHILDREN of this test
    process would include its other children)."""
    bound = bound_mb * MB
    reference, current = tmp_path / "reference.parquet", tmp_path / "current.parquet"
    write_large_parquet(reference, rows, columns, 0.0, seed=1)
    write_large_parquet(current, rows, columns, 0.3, seed=2)
    assert reference.stat().st_size + current.stat().st_size > bound
    command = [sys.executable, "-m", "services.monitor.cli", "drift", str(reference), str(current), "--json"]
    completed = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *command, "--memory-mb", str(bound // MB)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    status, peak = map(int, completed.stdout.splitlines()[0].split())
    assert status == 0, completed.stderr
    assert peak <= bound, f"peak RSS {peak / MB:.0f} MB over the {bound / MB:.0f} MB bound"
    print(f"{rows:,} x {columns} a side within {bound_mb} MB: peak RSS {peak / MB:.0f} MB")
    report = json.loads("\n".join(completed.stdout.splitlines()[1:]))
    assert report["number_of_columns"] == columns
    drifted = {name for name, column in report["columns"].items() if column["drift"]}
    assert drifted == {f"f{index:02d}" for index in range(1, columns, 2)}
    # Exact: two of the columns recomputed in this process on whole tables give the same scores.
    names = ["f00", "f01"]
    whole = compute_drift_report(
        build_reference_profile(pq.read_table(reference, columns=names)), pq.read_table(current, columns=names)
    )
    for name in names:
        assert report["columns"][name]["score"] == whole.columns[name].score


def test_cli_memory_bound_is_read_from_the_setting(tmp_path, monkeypatch):
    reference, current = mixed_tables(2_000)
    pq.write_table(reference, tmp_path / "reference.parquet")
    pq.write_table(current, tmp_path / "current.parquet")
    runner = CliRunner()
    arguments = [str(tmp_path / "reference.parquet"), str(tmp_path / "current.parquet"), "--json"]
    monkeypatch.setenv("TESSERA_MONITOR_DRIFT_MEMORY_MB", "10")
    too_small = runner.invoke(app, arguments)
    assert "TESSERA_MONITOR_DRIFT_MEMORY_MB" in too_small.output
    monkeypatch.setenv("TESSERA_MONITOR_DRIFT_MEMORY_MB", "64")
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["number_of_drifted_columns"] >= 1


def test_cli_shows_a_bar_over_the_column_groups_on_a_terminal_and_none_with_json(tmp_path, monkeypatch):
    reference, current = mixed_tables(2_000)
    pq.write_table(reference, tmp_path / "reference.parquet")
    pq.write_table(current, tmp_path / "current.parquet")
    screen = io.StringIO()
    monkeypatch.setattr(
        cli, "progress_console", Console(file=screen, force_terminal=True, color_system=None, width=120)
    )
    # The process already holds more than 64 MB: one column per group.
    arguments = [str(tmp_path / "reference.parquet"), str(tmp_path / "current.parquet"), "--memory-mb", "64"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "Drift, group 8/8" in screen.getvalue()
    assert "8/8 columns" in screen.getvalue()
    screen.seek(0)
    screen.truncate()
    result = CliRunner().invoke(app, [*arguments, "--json"])
    assert result.exit_code == 0, result.output
    assert screen.getvalue() == ""
    assert json.loads(result.output)["number_of_columns"] >= 1
