"""Dataset verdict, stored profiles, the offline CLI and the HTML page (in headless Chromium)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from services.monitor.cli import app
from services.monitor.domain.drift import (
    DriftOptions,
    ProfileFormatError,
    ReferenceProfile,
    build_reference_profile,
    compute_drift_report,
    render_html,
)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
COLUMN_KEYS = {
    "column_type",
    "method",
    "score",
    "threshold",
    "drift",
    "status",
    "reason",
    "missing_share",
    "new_categories",
    "reference",
    "current",
}


def frames(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Four columns of which two drift (a and label), plus one that cannot be tested."""
    generator = np.random.default_rng(seed)
    reference = pd.DataFrame(
        {
            "a": generator.normal(0, 1, rows),
            "b": generator.normal(0, 1, rows),
            "label": generator.choice(["x", "y", "z"], rows, p=[0.5, 0.3, 0.2]),
            "segment": generator.choice(["p", "q", "r"], rows),
            "empty": np.full(rows, np.nan),
        }
    )
    current = pd.DataFrame(
        {
            "a": generator.normal(1.0, 1, rows),
            "b": generator.normal(0, 1, rows),
            "label": generator.choice(["x", "y", "z", "new"], rows, p=[0.2, 0.3, 0.3, 0.2]),
            "segment": generator.choice(["p", "q", "r"], rows),
            "empty": np.full(rows, np.nan),
        }
    )
    current.loc[::10, "b"] = np.nan
    return reference, current


def test_dataset_drift_is_the_share_of_drifted_tested_columns():
    reference, current = frames(3_000)
    profile = build_reference_profile(reference)
    report = compute_drift_report(profile, current)
    drifted = {name for name, column in report.columns.items() if column.drift}
    assert drifted == {"a", "label"}
    assert report.columns["empty"].status == "not_tested"
    assert (report.number_of_columns, report.number_of_drifted_columns) == (4, 2)
    assert report.drift_share == 0.5
    assert report.dataset_drift is True
    assert compute_drift_report(profile, current, DriftOptions(drift_share=0.6)).dataset_drift is False


def test_report_dict_has_the_documented_shape_and_is_strict_json():
    reference, current = frames(500)
    # chi-square on a single category has no degrees of freedom: its p-value is NaN and must not leak.
    reference["one"] = "same"
    current["one"] = "same"
    report = compute_drift_report(
        build_reference_profile(reference), current, DriftOptions(per_column_method={"one": "chisquare"})
    ).to_dict()
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    assert set(report) >= {"dataset_drift", "drift_share", "number_of_columns", "number_of_drifted_columns"}
    for column in report["columns"].values():
        assert set(column) == COLUMN_KEYS
    assert report["columns"]["one"]["score"] is None
    assert report["columns"]["one"]["status"] == "not_tested"
    label = report["columns"]["label"]
    assert label["new_categories"]["examples"] == ["new"]
    assert label["reference"]["histogram"]["labels"] == label["current"]["histogram"]["labels"]
    assert sum(label["current"]["histogram"]["counts"]) == 500
    assert report["columns"]["b"]["missing_share"] == pytest.approx(0.1)


def test_profile_round_trip_gives_the_same_report():
    reference, current = frames(2_000)
    profile = build_reference_profile(reference)
    blob = profile.to_bytes()
    restored = ReferenceProfile.from_bytes(blob)
    assert compute_drift_report(restored, current).to_dict() == compute_drift_report(profile, current).to_dict()
    # Low-cardinality data compresses far below the raw values.
    discrete = pd.DataFrame({"level": np.random.default_rng(1).integers(0, 50, 100_000).astype(float)})
    assert len(build_reference_profile(discrete).to_bytes()) < 2_000
    with pytest.raises(ProfileFormatError):
        ReferenceProfile.from_bytes(b"not a profile")


def test_a_version_1_profile_keeps_the_types_it_was_saved_with():
    """Version 1 fixed each column's type when profiling; those types still win over the window's."""
    few = pd.DataFrame({"level": np.random.default_rng(2).integers(0, 8, 3_000)})
    many = pd.DataFrame({"level": np.random.default_rng(3).integers(0, 15, 3_000)})
    archive = dict(np.load(io.BytesIO(build_reference_profile(few).to_bytes())))
    header = json.loads(archive["header"].tobytes())
    header["version"] = 1
    header["columns"] = [
        {key: value for key, value in entry.items() if key not in ("reference_type", "named_type")}
        | {"column_type": "categorical"}
        for entry in header["columns"]
    ]
    archive["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **archive)
    old = ReferenceProfile.from_bytes(buffer.getvalue())
    assert compute_drift_report(old, many).columns["level"].column_type == "categorical"
    assert compute_drift_report(build_reference_profile(few), many).columns["level"].column_type == "numerical"


@pytest.fixture
def data_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    reference, current = frames(1_500)
    reference.to_csv(tmp_path / "reference.csv", index=False)
    current.to_csv(tmp_path / "current.csv", index=False)
    current.to_parquet(tmp_path / "current.parquet", index=False)
    return tmp_path / "reference.csv", tmp_path / "current.csv", tmp_path / "current.parquet"


def test_cli_prints_json_for_csv_and_parquet_and_writes_html(data_files, tmp_path):
    reference, current_csv, current_parquet = data_files
    runner = CliRunner()
    reports = []
    for current in (current_csv, current_parquet):
        html = tmp_path / f"{current.suffix[1:]}.html"
        result = runner.invoke(app, [str(reference), str(current), "--json", "--html", str(html)])
        assert result.exit_code == 0, result.output
        reports.append(json.loads(result.output))
        # The banner is filled in by the page's script (see the Chromium test).
        assert "The verdict needs JavaScript." in html.read_text()
    csv_report, parquet_report = reports
    assert csv_report["dataset_drift"] is True
    assert (csv_report["number_of_columns"], csv_report["number_of_drifted_columns"]) == (4, 2)
    assert csv_report["columns"]["a"]["method"] == "wasserstein"
    assert set(csv_report["columns"]["label"]) == COLUMN_KEYS
    # CSV floats round-trip exactly, so both files give the same scores.
    assert {name: column["score"] for name, column in csv_report["columns"].items()} == {
        name: column["score"] for name, column in parquet_report["columns"].items()
    }


def test_cli_table_saved_profile_and_exit_code(data_files, tmp_path):
    reference, current, _ = data_files
    profile = tmp_path / "reference.npz"
    runner = CliRunner()
    result = runner.invoke(app, [str(reference), str(current), "--save-profile", str(profile)])
    assert result.exit_code == 0, result.output
    assert "Dataset drift detected: 2 of 4 columns drifted" in result.output
    assert "wasserstein" in result.output
    from_profile = runner.invoke(app, [str(profile), str(current), "--fail-on-drift"])
    assert from_profile.exit_code == 1
    bad = runner.invoke(app, [str(reference), str(current), "--method", "t-test"])
    assert bad.exit_code == 2
    assert "unknown drift method" in bad.output


def test_cli_runs_as_a_module(data_files):
    reference, current, _ = data_files
    completed = subprocess.run(
        [sys.executable, "-m", "services.monitor.cli", "drift", str(reference), str(current), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(completed.stdout)["number_of_drifted_columns"] == 2


def test_html_size_does_not_grow_with_rows():
    sizes = []
    for rows in (2_000, 200_000):
        reference, current = frames(rows)
        sizes.append(len(render_html(compute_drift_report(build_reference_profile(reference), current))))
    small, large = sizes
    assert abs(large - small) / small < 0.03


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_html_renders_verdict_and_sorted_table_in_headless_chromium(tmp_path):
    reference, current = frames(1_000)
    page = tmp_path / "report.html"
    page.write_text(render_html(compute_drift_report(build_reference_profile(reference), current)))
    completed = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    dom = completed.stdout
    assert "Dataset drift detected: 2 of 4 columns drifted (50.0%, threshold 50.0%)" in dom
    assert "The verdict needs JavaScript." not in dom
    assert 'data-sorted="drift"' in dom
    body = dom[dom.index("<tbody>") : dom.index("</tbody>")]
    order = [body.index(f'data-name="{name}"') for name in ("a", "label", "b", "segment", "empty")]
    # Drifted columns first, then stable ones, then untested ones; by name within each group.
    assert order == sorted(order)
