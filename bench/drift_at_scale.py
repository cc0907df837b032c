"""`tessera drift` on Parquet files larger than memory allows to hold whole, Evidently 0.7 side by side
where it can still run.

    .venv/bin/python bench/drift_at_scale.py [--scenarios 1m,5m,10m] [--evidently-python PATH] [--quick]

Per scenario it writes a reference and a current Parquet file (float64 columns from
`drift_vs_evidently.make_columns`, generated and written one row group at a time, so writing never holds
the data), then runs each system in a fresh process on the two files, as a user would:

- Tessera: `python -m services.monitor.cli drift REF CUR --json`, with the default memory bound
  (`TESSERA_MONITOR_DRIFT_MEMORY_MB`) unless `--memory-mb` is given;
- Tessera on whole tables: the same engine on `read_table` of both files (what `tessera drift` did
  before it read a group of columns at a time), for the memory it needs; on the scenarios too large
  for it (`--whole-scenarios`), on the first `--check-columns` columns only, for the agreement of scores;
- Evidently (with `--evidently-python`, a venv with evidently 0.7, pandas<3 and pyarrow): both files
  read into pandas, then `Report([DataDriftPreset()]).run(current, reference)`.

Peak memory is the process's peak RSS as its parent sees it (`RUSAGE_CHILDREN` of a parent that runs
nothing else), so it includes the interpreter, the libraries, reading the files and the computation;
CPU is that process's user + system time (all its threads), which the machine's load moves far less
than the wall-clock time. The files are deleted after each scenario. The last line printed is a JSON
object with every figure. `--quick` runs one small scenario (300k x 20), for trying changes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import stopping  # noqa: E402
from drift_vs_evidently import EVIDENTLY_METHODS, compare, make_columns  # noqa: E402

SCENARIOS: dict[str, tuple[int, int]] = {
    # name: (rows per side, float64 columns)
    "1m": (1_000_000, 25),
    "5m": (5_000_000, 40),
    "10m-narrow": (10_000_000, 20),
    "10m": (10_000_000, 100),
    "quick": (300_000, 20),
}
# Values per side generated and written at a time (one row group).
CHUNK_VALUES = 25_000_000

PEAK_RSS = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
completed = subprocess.run(sys.argv[1:], capture_output=True, text=True, env=None)
seconds = time.perf_counter() - started
sys.stderr.write(completed.stderr[-3000:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
figures = {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}
print(json.dumps({"status": completed.returncode, **figures}))
print(completed.stdout)
"""

WHOLE_TABLES = """
import json, sys
import pyarrow.parquet as pq
from services.monitor.domain.drift import build_reference_profile, compute_drift_report
columns = sys.argv[3].split(",") if len(sys.argv) > 3 else None
profile = build_reference_profile(pq.read_table(sys.argv[1], columns=columns))
print(json.dumps(compute_drift_report(profile, pq.read_table(sys.argv[2], columns=columns)).to_dict()))
"""

EVIDENTLY = """
import json, sys, warnings
warnings.filterwarnings("ignore")
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset

reference, current = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
snapshot = Report([DataDriftPreset()]).run(current, reference)
print(json.dumps(snapshot.dict()["metrics"], default=str))
"""


def write_scenario(folder: Path, rows: int, columns: int) -> tuple[Path, Path]:
    chunk = max(100_000, min(1_000_000, CHUNK_VALUES // columns))
    names = [f"num_{index:02d}" for index in range(columns)]
    schema = pa.schema([(name, pa.float64()) for name in names])
    paths = folder / "reference.parquet", folder / "current.parquet"
    with pq.ParquetWriter(paths[0], schema) as reference_file, pq.ParquetWriter(paths[1], schema) as current_file:
        for number, start in enumerate(range(0, rows, chunk)):
            reference, current = make_columns(min(chunk, rows - start), columns, 0, seed=2026 + number)
            for file, side in ((reference_file, reference), (current_file, current)):
                file.write_table(pa.Table.from_arrays([pa.array(side[name]) for name in names], names=names))
    return paths


def run_measured(command: list[str], timeout: float, env: dict[str, str]) -> dict[str, Any] | None:
    try:
        completed = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=env,
        )
    except subprocess.TimeoutExpired:
        print(f"  timed out after {timeout:.0f} s: {command[:3]}", flush=True)
        return None
    first, _, rest = completed.stdout.partition("\n")
    result = json.loads(first)
    if result["status"] != 0:
        print(f"  failed ({result['status']}): {completed.stderr[-1500:]}", flush=True)
        return None
    result["output"] = rest
    result["load"] = os.getloadavg()[0]
    return result


def tessera_columns(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "share": report["drift_share"],
        "columns": {
            name: {"method": column["method"], "score": column["score"], "drift": column["drift"]}
            for name, column in report["columns"].items()
        },
    }


def evidently_columns(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    columns, share = {}, None
    for metric in metrics:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            method = EVIDENTLY_METHODS.get(config["method"], config["method"])
            score = float(metric["value"])
            threshold = config["threshold"]
            drift = score <= threshold if method == "ks" else score >= threshold
            columns[config["column"]] = {"method": method, "score": score, "drift": drift}
        elif config["type"].endswith("DriftedColumnsCount"):
            share = metric["value"]["share"]
    return {"share": share, "columns": columns}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="1m,5m,10m", help=f"any of {', '.join(SCENARIOS)}")
    parser.add_argument("--quick", action="store_true", help="only the quick scenario (300k x 20)")
    parser.add_argument("--evidently-python", help="python of a venv with evidently 0.7 (e.g. /tmp/ev/bin/python)")
    parser.add_argument("--evidently-scenarios", default="1m,quick", help="scenarios Evidently runs on")
    parser.add_argument("--whole-scenarios", default="1m,5m,quick", help="scenarios the whole-table engine runs on")
    parser.add_argument(
        "--check-columns", type=int, default=10, help="columns the whole-table engine checks on the other scenarios"
    )
    parser.add_argument("--memory-mb", type=int, help="TESSERA_MONITOR_DRIFT_MEMORY_MB for the Tessera run")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--folder", default=tempfile.gettempdir(), help="where the Parquet files are written")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.scenarios = "quick"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if arguments.memory_mb:
        env["TESSERA_MONITOR_DRIFT_MEMORY_MB"] = str(arguments.memory_mb)

    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    results: dict[str, Any] = {}
    for scenario in arguments.scenarios.split(","):
        rows, columns = SCENARIOS[scenario]
        folder = Path(tempfile.mkdtemp(prefix=f"drift-{scenario}-", dir=arguments.folder))
        try:
            started = time.perf_counter()
            reference, current = write_scenario(folder, rows, columns)
            size = reference.stat().st_size + current.stat().st_size
            entry: dict[str, Any] = {"rows": rows, "columns": columns, "parquet_mb": size / 2**20}
            print(
                f"{scenario}: {rows:,} rows x {columns} columns per side, {size / 2**30:.2f} GiB of Parquet "
                f"written in {time.perf_counter() - started:.0f} s (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
            cli = [sys.executable, "-m", "services.monitor.cli", "drift"]
            runs = {"tessera": [*cli, str(reference), str(current), "--json"]}
            whole = [sys.executable, "-c", WHOLE_TABLES, str(reference), str(current)]
            if scenario in arguments.whole_scenarios.split(","):
                runs["tessera_whole_tables"] = whole
            elif arguments.check_columns:
                checked = pq.read_schema(reference).names[: arguments.check_columns]
                runs["tessera_whole_tables"] = [*whole, ",".join(checked)]
            if arguments.evidently_python and scenario in arguments.evidently_scenarios.split(","):
                runs["evidently"] = [arguments.evidently_python, "-c", EVIDENTLY, str(reference), str(current)]
            verdicts: dict[str, Any] = {}
            for system, command in runs.items():
                measured = run_measured(command, arguments.timeout, env)
                if measured is None:
                    continue
                output = json.loads(measured.pop("output"))
                verdicts[system] = evidently_columns(output) if system == "evidently" else tessera_columns(output)
                entry[system] = measured
                print(
                    f"  {system:<21} {measured['seconds']:8.1f} s  CPU {measured['cpu_seconds']:7.1f} s  "
                    f"peak RSS {measured['peak_rss_mb']:7.0f} MB  drift share {verdicts[system]['share']:.3f}  "
                    f"(load {measured['load']:.1f})",
                    flush=True,
                )
            for other in ("tessera_whole_tables", "evidently"):
                if "tessera" in verdicts and other in verdicts:
                    entry[f"agreement_with_{other}"] = agreement = compare(verdicts["tessera"], verdicts[other])
                    print(
                        f"  tessera vs {other}: methods {agreement['methods_agree']}/{agreement['columns']}, "
                        f"verdicts {agreement['verdicts_agree']}/{agreement['columns']}, "
                        f"max score difference {agreement['max_score_difference']:.1e}",
                        flush=True,
                    )
            results[scenario] = entry
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    stopping.run(main)
