"""Request batching on and off: throughput of one sklearn model server under concurrent clients.

    .venv/bin/python bench/batching_throughput.py [--requests 3000] [--concurrency 8] [--rows 1] [--quick]

One model server (LogisticRegression on iris, saved with mlflow) started by the deployer's process manager.
Each phase sends `--requests` POSTs of `--rows` rows from `--concurrency` concurrent keep-alive clients, each
request with rows of its own; "off" sends them as they are, the batched phases with the batching header the
gateway adds for a deployment with `batching: {max_batch_size, max_latency_ms}` (one phase per
`--settings`). Phases take turns in `--rounds` rounds so that a load swing on a shared machine hits all
alike. Per phase: requests/s, p50/p99 latency, and the model server's CPU milliseconds per request (which a
busy machine distorts less than wall-clock figures); every answer is checked against the in-process
prediction of its own rows. The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import httpx
import mlflow.pyfunc
import numpy as np
import stopping
from serving_overhead import process_cpu_ms, save_iris_model

from services.deployer.domain.process_manager import ModelServerSpec, ProcessManager
from services.deployer.model_server import BATCHING_HEADER, batching_header_value


async def phase(url: str, bodies: list[bytes], concurrency: int, headers: dict[str, str]) -> tuple[list, list, float]:
    """(latencies ms, answers in request order, elapsed s)."""
    latencies: list[float] = []
    answers: list[bytes | None] = [None] * len(bodies)
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < len(bodies):
            index, next_index = next_index, next_index + 1
            started = time.perf_counter()
            response = await client.post(url, content=bodies[index], headers=headers)
            latencies.append((time.perf_counter() - started) * 1000.0)
            answers[index] = response.content if response.status_code == 200 else None

    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        began = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        return latencies, answers, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="requests per phase and round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--settings", default="32:0,32:2,32:5", help="batched phases, max_batch_size:max_latency_ms, comma-separated"
    )
    parser.add_argument("--quick", action="store_true", help="600 requests, one round")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds = 600, 1
    phases = {"off": {"content-type": "application/json"}}
    for setting in args.settings.split(","):
        size, latency = setting.split(":")
        phases[f"batch {size}, {latency} ms"] = {
            "content-type": "application/json",
            BATCHING_HEADER: batching_header_value(int(size), float(latency)),
        }

    with tempfile.TemporaryDirectory(prefix="tessera-bench-batching-") as scratch_dir:
        scratch = Path(scratch_dir)
        model_path, features = save_iris_model(scratch)
        frames = [features.iloc[(i * args.rows) % 140 :][: args.rows] for i in range(args.requests)]
        bodies = [json.dumps({"dataframe_split": frame.to_dict(orient="split")}).encode() for frame in frames]
        model = mlflow.pyfunc.load_model(str(model_path))
        expected = [json.dumps({"predictions": model.predict(frame).tolist()}) for frame in frames]
        manager = ProcessManager(scratch / "logs")
        server = manager.start(ModelServerSpec(model_uri=str(model_path), name="iris", version="1"))
        url = f"{server.url}/invocations"
        results: dict[str, dict[str, list[float]]] = {label: {"rps": [], "lat": [], "cpu": []} for label in phases}
        wrong = dict.fromkeys(phases, 0)
        load_before = os.getloadavg()[0]
        try:
            asyncio.run(phase(url, bodies[:200], args.concurrency, phases["off"]))  # warm-up
            for _ in range(args.rounds):
                for label, headers in phases.items():
                    cpu_before = process_cpu_ms(server.pid)
                    latencies, answers, elapsed = asyncio.run(phase(url, bodies, args.concurrency, headers))
                    results[label]["cpu"].append((process_cpu_ms(server.pid) - cpu_before) / len(bodies))
                    results[label]["rps"].append(len(bodies) / elapsed)
                    results[label]["lat"].extend(latencies)
                    wrong[label] += sum(
                        answer is None or json.loads(answer) != json.loads(want)
                        for answer, want in zip(answers, expected, strict=True)
                    )
        finally:
            manager.stop(server)
        load_after = os.getloadavg()[0]

    print(f"{'phase':<18} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>11} {'wrong':>6}")
    summary: dict[str, object] = {}
    base_rps = float(np.median(results["off"]["rps"]))
    for label, figures in results.items():
        rps, cpu = float(np.median(figures["rps"])), float(np.median(figures["cpu"]))
        p50, p99 = np.percentile(figures["lat"], 50), np.percentile(figures["lat"], 99)
        print(f"{label:<18} {rps:>8.0f} {p50:>8.2f} {p99:>8.2f} {cpu:>11.3f} {wrong[label]:>6}")
        summary[label] = {
            "rps": round(rps, 1),
            "p50_ms": round(float(p50), 3),
            "p99_ms": round(float(p99), 3),
            "cpu_ms_per_request": round(cpu, 3),
            "throughput_vs_off": round(rps / base_rps, 3),
            "wrong_answers": wrong[label],
        }
    print(f"{args.concurrency} clients, {args.rows} row(s) per request")
    print(f"load average {load_before:.1f} -> {load_after:.1f}")
    summary["load_avg_1m"] = [round(load_before, 2), round(load_after, 2)]
    print(json.dumps(summary))


if __name__ == "__main__":
    stopping.run(main)
