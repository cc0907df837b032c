"""Serving overhead: latency and throughput of a model server called directly.

    .venv/bin/python bench/serving_overhead.py [--requests 2000] [--concurrency 4] [--rows 1]

Starts one model server (a small sklearn model saved with mlflow) through the deployer's process manager,
drives `POST /invocations` with httpx (bounded in count and time, loopback only) and stops it. Per target:
- latency: p50/p99 over `--requests` sequential requests, so queueing does not hide per-request cost;
- throughput: requests/s with `--concurrency` concurrent keep-alive connections;
- CPU: milliseconds of the serving process's CPU per request, which a busy shared machine distorts far
  less than wall-clock latency.
Each measured path is a `Target`; the gateway in front of the same server is meant to be added as a
second one. The last line is a JSON summary for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow.sklearn
import numpy as np
import pandas as pd
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from services.deployer.domain.process_manager import ModelServerSpec, ProcessManager

# Upper bound on one phase, whatever --requests says, so a stuck server cannot hang the run.
MAX_SECONDS_PER_PHASE = 120.0
HEADERS = {"content-type": "application/json"}


@dataclass(frozen=True)
class Target:
    label: str
    url: str
    # The process whose CPU is charged to this path (the model server directly; later the gateway too).
    pid: int


@dataclass(frozen=True)
class TargetResult:
    latencies_ms: np.ndarray
    errors: int
    rps: float
    cpu_ms_per_request: float

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms.size else float("nan")


def save_iris_model(directory: Path) -> tuple[Path, pd.DataFrame]:
    features, target = load_iris(return_X_y=True, as_frame=True)
    path = directory / "iris"
    mlflow.sklearn.save_model(
        LogisticRegression(max_iter=500).fit(features, target), str(path), pip_requirements=["scikit-learn"]
    )
    return path, features


def process_cpu_ms(pid: int) -> float:
    # utime and stime, in clock ticks, are fields 14 and 15 of /proc/PID/stat (11 and 12 after the name).
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")


async def drive(url: str, body: bytes, *, requests: int, concurrency: int) -> tuple[list[float], int, float]:
    """`requests` POSTs from `concurrency` workers; returns per-request ms, error count, elapsed seconds."""
    latencies: list[float] = []
    errors = 0
    remaining = requests
    deadline = time.monotonic() + MAX_SECONDS_PER_PHASE
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal remaining, errors
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            started = time.perf_counter()
            response = await client.post(url, content=body, headers=HEADERS)
            latencies.append((time.perf_counter() - started) * 1000.0)
            errors += response.status_code != 200

    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - began


async def measure(target: Target, body: bytes, args: argparse.Namespace) -> TargetResult:
    await drive(target.url, body, requests=args.warmup, concurrency=args.concurrency)
    cpu_before = process_cpu_ms(target.pid)
    latencies, latency_errors, _ = await drive(target.url, body, requests=args.requests, concurrency=1)
    cpu_ms_per_request = (process_cpu_ms(target.pid) - cpu_before) / max(len(latencies), 1)
    throughput_latencies, throughput_errors, elapsed = await drive(
        target.url, body, requests=args.requests, concurrency=args.concurrency
    )
    return TargetResult(
        latencies_ms=np.asarray(latencies),
        errors=latency_errors + throughput_errors,
        rps=len(throughput_latencies) / elapsed if elapsed else 0.0,
        cpu_ms_per_request=cpu_ms_per_request,
    )


def report(results: dict[str, TargetResult], concurrency: int) -> dict[str, float]:
    print(f"{'target':<10} {'p50 ms':>8} {'p99 ms':>8} {f'req/s @{concurrency}':>12} {'CPU ms/req':>11} {'errors':>7}")
    summary: dict[str, float] = {}
    for label, result in results.items():
        p50, p99 = result.percentile_ms(50), result.percentile_ms(99)
        print(
            f"{label:<10} {p50:>8.2f} {p99:>8.2f} {result.rps:>12.0f} "
            f"{result.cpu_ms_per_request:>11.3f} {result.errors:>7}"
        )
        summary |= {
            f"{label}_p50_ms": round(p50, 3),
            f"{label}_p99_ms": round(p99, 3),
            f"{label}_rps": round(result.rps, 1),
            f"{label}_cpu_ms_per_request": round(result.cpu_ms_per_request, 3),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests per phase")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4, help="connections in the throughput phase")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tessera-bench-") as scratch:
        model_path, features = save_iris_model(Path(scratch))
        body = json.dumps({"dataframe_split": features.head(args.rows).to_dict(orient="split")}).encode()
        manager = ProcessManager(Path(scratch) / "logs")
        server = manager.start(ModelServerSpec(model_uri=str(model_path), name="iris", version="1"))
        try:
            targets = [Target("direct", f"{server.url}/invocations", server.pid)]
            results = {target.label: asyncio.run(measure(target, body, args)) for target in targets}
        finally:
            manager.stop(server)
    print(json.dumps(report(results, args.concurrency)))


if __name__ == "__main__":
    main()
