"""Tessera's drift engine against Evidently 0.7's DataDriftPreset on the same data.

Run it in the benchmark venv, which has Evidently (see bench/README.md):

    .venv-bench/bin/python bench/drift_vs_evidently.py [--scenarios small,100k,1m,1m-wide] [--evidently-wide]

Each tool runs in a fresh child process per scenario that builds the same fixed-seed columns in the
tool's own input type (a pandas DataFrame for Evidently, a pyarrow Table for Tessera, which is what the
monitor service reads logged Parquet into), then times the tool and measures its peak resident memory
(VmHWM after resetting it through /proc/self/clear_refs once the data is built). RSS of a fresh process
is used rather than tracemalloc because tracemalloc misses memory that does not go through Python's
allocator hooks (Arrow's pool, some C extensions) and slows Python-heavy code such as Evidently's by
several times, which would skew the time ratio. The last line printed is a JSON object with all figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import stopping

if TYPE_CHECKING:
    import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS: dict[str, tuple[int, int, int]] = {
    # name: (rows per side, numerical columns, categorical columns)
    "small": (1_000, 20, 5),
    "100k": (100_000, 20, 5),
    "1m": (1_000_000, 20, 0),
    "1m-wide": (1_000_000, 100, 0),
}
# Evidently 0.7's display names in a snapshot, and the names when a method was given explicitly.
EVIDENTLY_METHODS = {
    "K-S p_value": "ks",
    "Wasserstein distance (normed)": "wasserstein",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
    "Jensen-Shannon distance": "jensenshannon",
    "PSI": "psi",
    "Hellinger distance": "hellinger",
    "Kullback-Leibler divergence": "kl_div",
}
SCORE_TOLERANCE = 1e-6
# Reported per child: which of these large libraries the tool's process had loaded.
HEAVY_MODULES = ("pandas", "scipy.stats", "scipy.special", "scipy.spatial")


Columns = dict[str, np.ndarray]


def make_columns(rows: int, numerical: int, categorical: int, seed: int = 2026) -> tuple[Columns, Columns]:
    """Reference and current data with a spread of drift sizes, some right at the thresholds: float64
    arrays with NaN for missing numbers, object arrays of str with None for missing labels."""
    generator = np.random.default_rng(seed)
    reference: dict[str, Any] = {}
    current: dict[str, Any] = {}
    # Shifts in standard deviations; the normed Wasserstein distance of a pure shift is about the shift.
    shifts = [0.0, 0.02, 0.05, 0.08, 0.09, 0.11, 0.15, 0.3, 0.5, 1.0]
    for index in range(numerical):
        name = f"num_{index:02d}"
        kind = index % 5
        shift = shifts[index % len(shifts)]
        if kind == 0:
            reference[name] = generator.normal(0, 1, rows)
            current[name] = generator.normal(shift, 1, rows)
        elif kind == 1:
            reference[name] = generator.lognormal(0, 0.5, rows)
            current[name] = generator.lognormal(shift / 2, 0.5, rows)
        elif kind == 2:
            reference[name] = generator.uniform(0, 10, rows)
            current[name] = generator.uniform(shift * 3, 10 + shift * 3, rows)
        elif kind == 3:
            # Rounded values: ties between the two sides.
            reference[name] = np.round(generator.normal(50, 10, rows))
            current[name] = np.round(generator.normal(50 + 10 * shift, 10, rows))
        else:
            # Four levels: tested like a categorical column.
            reference[name] = generator.choice([0.0, 1.0, 2.0, 3.0], rows, p=[0.4, 0.3, 0.2, 0.1])
            current[name] = generator.choice([0.0, 1.0, 2.0, 3.0], rows, p=[0.4 - shift / 4, 0.3, 0.2, 0.1 + shift / 4])
        if index % 3 == 0:
            current[name][generator.random(rows) < 0.02] = np.nan
            reference[name][generator.random(rows) < 0.01] = np.nan
    labels = np.array([f"level_{i}" for i in range(60)], dtype=object)
    for index in range(categorical):
        name = f"cat_{index}"
        levels = [3, 5, 10, 2, 50][index % 5]
        weights = 1 / np.arange(1, levels + 1)
        reference[name] = generator.choice(labels[:levels], rows, p=weights / weights.sum())
        drifted = weights.copy()
        if index % 5 in (1, 2, 4):
            drifted[0] *= 0.6
        current_labels = labels[: levels + (1 if index % 5 == 2 else 0)]  # a new category in cat_2
        if len(current_labels) > levels:
            drifted = np.append(drifted, drifted[-1])
        current[name] = generator.choice(current_labels, rows, p=drifted / drifted.sum())
        if index % 5 == 4:
            current[name][generator.random(rows) < 0.03] = None
    return reference, current


def load_input(tool: str, scenario: str) -> tuple[Any, Any]:
    """The scenario's columns as each tool takes them: pandas DataFrames for Evidently, Arrow tables for
    Tessera (what the monitor reads logged Parquet into). Same values, same missing values."""
    reference, current = make_columns(*SCENARIOS[scenario])
    if tool == "tessera":
        return arrow_table(reference), arrow_table(current)
    import pandas as pd

    return pd.DataFrame(reference), pd.DataFrame(current)


def arrow_table(columns: Columns) -> pa.Table:
    """Arrow columns built from buffers: a float column shares its numpy array (NaN stays a float value,
    as in the DataFrame), a label column becomes an Arrow string array with nulls for None. Built by hand
    because `pa.array`/`pa.table` on numpy input import pandas, which Tessera's engine does not use."""
    arrays = {}
    for name, values in columns.items():
        if values.dtype == np.float64:
            arrays[name] = pa.Array.from_buffers(pa.float64(), len(values), [None, pa.py_buffer(values)])
            continue
        present = np.array([value is not None for value in values])
        encoded = [value.encode() if value is not None else b"" for value in values]
        offsets = np.zeros(len(values) + 1, dtype=np.int32)
        np.cumsum([len(text) for text in encoded], out=offsets[1:])
        buffers = [pa.py_buffer(np.packbits(present, bitorder="little")), pa.py_buffer(offsets)]
        arrays[name] = pa.Array.from_buffers(
            pa.string(), len(values), [*buffers, pa.py_buffer(b"".join(encoded))], null_count=int((~present).sum())
        )
    return pa.table(arrays)


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    # Writing 5 resets the process's peak RSS (VmHWM), so the peak measures the tool, not data building.
    Path("/proc/self/clear_refs").write_text("5")


Runner = Callable[[Any, Any], dict[str, Any]]


def tessera_runner() -> Runner:
    sys.path.insert(0, str(ROOT))
    from services.monitor.domain.drift import build_reference_profile, compute_drift_report

    def run(reference: pa.Table, current: pa.Table) -> dict[str, Any]:
        started = time.perf_counter()
        profile = build_reference_profile(reference)
        profiled = time.perf_counter()
        report = compute_drift_report(profile, current)
        finished = time.perf_counter()
        peak = _rss_mb("VmHWM")  # before serializing the profile, which only feeds the size figure
        columns = {
            name: {"method": column.method, "score": column.score, "threshold": column.threshold, "drift": column.drift}
            for name, column in report.columns.items()
        }
        return {
            "seconds": finished - started,
            "profile_seconds": profiled - started,
            "report_seconds": finished - profiled,
            "peak_rss_mb": peak,
            "profile_bytes": len(profile.to_bytes()),
            "share": report.drift_share,
            "dataset_drift": report.dataset_drift,
            "columns": columns,
        }

    return run


def evidently_runner() -> Runner:
    import warnings

    from evidently import Report
    from evidently.presets import DataDriftPreset

    warnings.filterwarnings("ignore")

    def run(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, Any]:
        started = time.perf_counter()
        snapshot = Report([DataDriftPreset()]).run(current, reference)
        finished = time.perf_counter()
        peak = _rss_mb("VmHWM")  # before reading the results out
        columns = {}
        share = None
        for metric in snapshot.dict()["metrics"]:
            config = metric["config"]
            if config["type"].endswith("ValueDrift"):
                method = EVIDENTLY_METHODS.get(config["method"], config["method"])
                score = float(metric["value"])
                columns[config["column"]] = {
                    "method": method,
                    "score": score,
                    "threshold": config["threshold"],
                    "drift": _evidently_verdict(method, score, config["threshold"]),
                }
            elif config["type"].endswith("DriftedColumnsCount"):
                share = metric["value"]["share"]
        return {
            "seconds": finished - started,
            "peak_rss_mb": peak,
            "share": share,
            "dataset_drift": share >= 0.5,
            "columns": columns,
        }

    return run


def _evidently_verdict(method: str, score: float, threshold: float) -> bool:
    """Evidently's rule per method (`evidently/legacy/calculations/stattests/*.py`)."""
    if method == "ks":
        return score <= threshold
    if method in ("chisquare", "z"):
        return score < threshold
    return score >= threshold


def child(tool: str, scenario: str) -> None:
    # Imports and data come before the baseline: the peak measures the work on the data.
    run = tessera_runner() if tool == "tessera" else evidently_runner()
    reference, current = load_input(tool, scenario)
    baseline = _rss_mb("VmRSS")
    _reset_peak_rss()
    result = run(reference, current)
    result["baseline_rss_mb"] = baseline
    result["peak_increase_mb"] = result["peak_rss_mb"] - baseline
    result["heavy_imports"] = sorted(name for name in HEAVY_MODULES if name in sys.modules)
    print(json.dumps(result))


def measure(tool: str, scenario: str, timeout: float) -> dict[str, Any] | None:
    command = [sys.executable, __file__, "--child", tool, "--scenarios", scenario]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        print(f"  {tool}: timed out after {timeout:.0f} s", flush=True)
        return None
    if completed.returncode != 0:
        print(f"  {tool} failed:\n{completed.stderr[-2000:]}", flush=True)
        return None
    return json.loads(completed.stdout.strip().splitlines()[-1])


def compare(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    names = sorted(theirs["columns"])
    methods = sum(ours["columns"][name]["method"] == theirs["columns"][name]["method"] for name in names)
    verdicts = sum(ours["columns"][name]["drift"] == theirs["columns"][name]["drift"] for name in names)
    differences = [
        abs(ours["columns"][name]["score"] - theirs["columns"][name]["score"])
        / max(1.0, abs(theirs["columns"][name]["score"]))
        for name in names
    ]
    return {
        "columns": len(names),
        "methods_agree": methods,
        "verdicts_agree": verdicts,
        "max_score_difference": max(differences),
        "scores_within_tolerance": sum(difference <= SCORE_TOLERANCE for difference in differences),
        "share_agrees": abs(ours["share"] - theirs["share"]) < 1e-12,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="small,100k,1m,1m-wide")
    parser.add_argument("--evidently-wide", action="store_true", help="also run Evidently on 1m-wide")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per Evidently run")
    parser.add_argument("--child", choices=["tessera", "evidently"], help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments.child, arguments.scenarios)
        return

    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores", flush=True)
    results: dict[str, Any] = {}
    for scenario in arguments.scenarios.split(","):
        rows, numerical, categorical = SCENARIOS[scenario]
        print(f"{scenario}: {rows:,} rows x {numerical + categorical} columns per side", flush=True)
        ours = measure("tessera", scenario, arguments.timeout)
        theirs = None
        if scenario != "1m-wide" or arguments.evidently_wide:
            theirs = measure("evidently", scenario, arguments.timeout)
        entry: dict[str, Any] = {"rows": rows, "columns": numerical + categorical, "load": os.getloadavg()[0]}
        if ours:
            entry["tessera"] = {key: value for key, value in ours.items() if key != "columns"}
        if theirs:
            entry["evidently"] = {key: value for key, value in theirs.items() if key != "columns"}
        if ours and theirs:
            entry["agreement"] = compare(ours, theirs)
            entry["time_ratio"] = theirs["seconds"] / ours["seconds"]
            entry["report_only_time_ratio"] = theirs["seconds"] / ours["report_seconds"]
            entry["peak_rss_ratio"] = theirs["peak_rss_mb"] / ours["peak_rss_mb"]
            entry["peak_increase_ratio"] = theirs["peak_increase_mb"] / max(ours["peak_increase_mb"], 1.0)
            disagreements = [
                (name, ours["columns"][name], theirs["columns"][name])
                for name in sorted(theirs["columns"])
                if ours["columns"][name]["drift"] != theirs["columns"][name]["drift"]
                or ours["columns"][name]["method"] != theirs["columns"][name]["method"]
            ]
            for name, mine, other in disagreements:
                print(f"  disagreement on {name}: tessera {mine} evidently {other}", flush=True)
        results[scenario] = entry
        _print_entry(scenario, entry)
    _print_table(results)
    print(json.dumps(results))


def _print_entry(scenario: str, entry: dict[str, Any]) -> None:
    ours, theirs = entry.get("tessera"), entry.get("evidently")
    if ours:
        print(
            f"  tessera   {ours['seconds']:8.2f} s (profile {ours['profile_seconds']:.2f} s + report "
            f"{ours['report_seconds']:.2f} s), peak RSS {ours['peak_rss_mb']:7.0f} MB "
            f"(+{ours['peak_increase_mb']:.0f} MB over the data), profile {ours['profile_bytes'] / 1e6:.1f} MB",
            flush=True,
        )
    if theirs:
        print(
            f"  evidently {theirs['seconds']:8.2f} s, peak RSS {theirs['peak_rss_mb']:7.0f} MB "
            f"(+{theirs['peak_increase_mb']:.0f} MB over the data)",
            flush=True,
        )


def _print_table(results: dict[str, Any]) -> None:
    header = (
        f"{'scenario':<9} {'rows':>9} {'cols':>4} {'evidently s':>11} {'tessera s':>9} {'x faster':>8} "
        f"{'(report only)':>13} {'ev peak MB':>10} {'te peak MB':>10} {'mem ratio':>9} {'(increase)':>10} "
        f"{'methods':>7} {'verdicts':>8} {'max |dscore|':>12} {'load':>5}"
    )
    print()
    print(header)
    print("-" * len(header))
    for scenario, entry in results.items():
        ours, theirs, agreement = entry.get("tessera", {}), entry.get("evidently", {}), entry.get("agreement", {})

        def cell(value: Any, width: int, pattern: str) -> str:
            return f"{'-':>{width}}" if value is None else f"{value:>{width}{pattern}}"

        methods = f"{agreement['methods_agree']}/{agreement['columns']}" if agreement else "-"
        verdicts = f"{agreement['verdicts_agree']}/{agreement['columns']}" if agreement else "-"
        print(
            f"{scenario:<9} {entry['rows']:>9,} {entry['columns']:>4} "
            f"{cell(theirs.get('seconds'), 11, '.2f')} {cell(ours.get('seconds'), 9, '.2f')} "
            f"{cell(entry.get('time_ratio'), 8, '.1f')} {cell(entry.get('report_only_time_ratio'), 13, '.1f')} "
            f"{cell(theirs.get('peak_rss_mb'), 10, '.0f')} {cell(ours.get('peak_rss_mb'), 10, '.0f')} "
            f"{cell(entry.get('peak_rss_ratio'), 9, '.2f')} {cell(entry.get('peak_increase_ratio'), 10, '.2f')} "
            f"{methods:>7} {verdicts:>8} {cell(agreement.get('max_score_difference'), 12, '.1e')} "
            f"{entry['load']:>5.2f}"
        )
    print()


if __name__ == "__main__":
    stopping.run(main)
