"""Serving overhead: requests/s and p50/p99 latency of a model server called directly.

    .venv/bin/python bench/serving_overhead.py [--requests 2000] [--concurrency 4] [--rows 1]

Starts one model server (a small sklearn model saved with mlflow) through the deployer's process manager,
drives `POST /invocations` with concurrent httpx requests (bounded in count and time, loopback only), and
stops it. Each measured path is a `Target`; the gateway in front of the same server is meant to be added
as a second target, and the last line is a JSON summary for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow.sklearn
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from services.deployer.domain.process_manager import ModelServerSpec, ProcessManager

# Upper bound on one measurement, whatever --requests says, so a stuck server cannot hang the run.
MAX_SECONDS_PER_TARGET = 120.0


@dataclass(frozen=True)
class Target:
    label: str
    url: str


@dataclass(frozen=True)
class LatencyStats:
    requests: int
    errors: int
    elapsed_s: float
    latencies_ms: np.ndarray

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms.size else float("nan")


def save_iris_model(directory: Path) -> tuple[Path, dict]:
    """The model under test, and one request body of the MLflow scoring protocol."""
    features, target = load_iris(return_X_y=True, as_frame=True)
    path = directory / "iris"
    mlflow.sklearn.save_model(
        LogisticRegression(max_iter=500).fit(features, target), str(path), pip_requirements=["scikit-learn"]
    )
    return path, features


async def drive(target: Target, body: bytes, *, requests: int, concurrency: int) -> LatencyStats:
    """Send `requests` POSTs from `concurrency` workers over keep-alive connections; time each one."""
    latencies: list[float] = []
    errors = 0
    remaining = requests
    deadline = time.monotonic() + MAX_SECONDS_PER_TARGET
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal remaining, errors
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            started = time.perf_counter()
            response = await client.post(target.url, content=body, headers=headers)
            latencies.append((time.perf_counter() - started) * 1000.0)
            errors += response.status_code != 200

    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return LatencyStats(len(latencies), errors, elapsed, np.asarray(latencies))


async def measure(targets: list[Target], body: bytes, args: argparse.Namespace) -> dict[str, LatencyStats]:
    results = {}
    for target in targets:
        await drive(target, body, requests=args.warmup, concurrency=args.concurrency)
        results[target.label] = await drive(target, body, requests=args.requests, concurrency=args.concurrency)
    return results


def report(results: dict[str, LatencyStats]) -> dict[str, float]:
    print(f"{'target':<10} {'requests':>9} {'errors':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    summary: dict[str, float] = {}
    for label, stats in results.items():
        p50, p99 = stats.percentile_ms(50), stats.percentile_ms(99)
        print(f"{label:<10} {stats.requests:>9} {stats.errors:>7} {stats.rps:>9.0f} {p50:>8.2f} {p99:>8.2f}")
        summary |= {
            f"{label}_p50_ms": round(p50, 3),
            f"{label}_p99_ms": round(p99, 3),
            f"{label}_rps": round(stats.rps, 1),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tessera-bench-") as scratch:
        model_path, features = save_iris_model(Path(scratch))
        body = json.dumps({"dataframe_split": features.head(args.rows).to_dict(orient="split")}).encode()
        manager = ProcessManager(Path(scratch) / "logs")
        server = manager.start(ModelServerSpec(model_uri=str(model_path), name="iris", version="1"))
        try:
            targets = [Target("direct", f"{server.url}/invocations")]
            results = asyncio.run(measure(targets, body, args))
        finally:
            manager.stop(server)
    print(json.dumps(report(results)))


if __name__ == "__main__":
    main()
