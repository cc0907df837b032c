"""A model's own environment: what Tessera's rollout pays to make it, against MLflow's `prepare-env`.

    .venv/bin/python bench/model_environments.py [--runs 3] [--quick]

Two models saved with mlflow: `extra` needs one small package the platform lacks (roman==4.2), `matching`
only packages the platform has at the same versions (scikit-learn, pandas). For each, per run, in a fresh
environment root:
- Tessera: `ModelEnvironments.interpreter(model, "auto")`, what the deployer's worker calls before it starts
  the model server: nothing for `matching`, a uv virtualenv layered on the platform's for `extra`.
- MLflow: `mlflow models prepare-env -m MODEL --env-manager uv` (`MLFLOW_ENV_ROOT` pointed at the fresh
  root), what `mlflow models serve --env-manager uv` does before it serves: a full environment with MLflow
  and every requirement, whatever the platform has.
Both use uv and the same warm uv cache (one untimed run of each first), so the figures leave out
downloads. Per tool and model: wall seconds, CPU seconds (this process and its children) and the
environment's size on disk; then the ratios. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import sklearn
import stopping
from uv import find_uv_bin

from services.deployer.domain.environments import ModelEnvironments


class RomanNumerals(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        import roman

        return [roman.toRoman(int(number)) for number in model_input["n"]]


def save_models(directory: Path) -> dict[str, Path]:
    requirements = {
        "extra": ["roman==4.2"],
        "matching": [f"scikit-learn=={sklearn.__version__}", f"pandas=={pd.__version__}"],
    }
    for name, pins in requirements.items():
        mlflow.pyfunc.save_model(str(directory / name), python_model=RomanNumerals(), pip_requirements=pins)
    return {name: directory / name for name in requirements}


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def disk_mb(path: Path) -> float:
    if not path.exists():
        return 0.0
    completed = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True)
    return int(completed.stdout.split()[0]) / 1024


def tessera(model: Path, root: Path) -> None:
    ModelEnvironments(root).interpreter(model, "auto")


def mlflow_prepare_env(model: Path, root: Path) -> None:
    # MLflow runs `uv` from PATH: the one the platform installs.
    path = f"{Path(find_uv_bin()).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    completed = subprocess.run(
        [sys.executable, "-m", "mlflow", "models", "prepare-env", "-m", str(model), "--env-manager", "uv"],
        env={**os.environ, "MLFLOW_ENV_ROOT": str(root), "PATH": path},
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        raise SystemExit(f"mlflow models prepare-env failed: {completed.stderr[-2000:]}")


def measure(build, model: Path, scratch: Path) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(dir=scratch))
    started_wall, started_cpu = time.perf_counter(), cpu_seconds()
    build(model, root)
    wall_s, cpu_s = time.perf_counter() - started_wall, cpu_seconds() - started_cpu
    return {"wall_s": wall_s, "cpu_s": cpu_s, "disk_mb": disk_mb(root)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one timed run per tool and model")
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    tools = {"tessera": tessera, "mlflow": mlflow_prepare_env}
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-envs-") as scratch_dir:
        scratch = Path(scratch_dir)
        models = save_models(scratch / "models")
        for build in tools.values():  # warms uv's cache: the timed runs download nothing
            build(models["extra"], Path(tempfile.mkdtemp(dir=scratch)))
        for model_name, model in models.items():
            for tool, build in tools.items():
                samples = [measure(build, model, scratch) for _ in range(runs)]
                results.setdefault(model_name, {})[tool] = {
                    key: statistics.median(sample[key] for sample in samples) for key in samples[0]
                }
    print(f"{'model':<10} {'tool':<8} {'wall s':>8} {'CPU s':>8} {'disk MB':>9}")
    for model_name, by_tool in results.items():
        for tool, figures in by_tool.items():
            print(
                f"{model_name:<10} {tool:<8} {figures['wall_s']:>8.2f} {figures['cpu_s']:>8.2f} "
                f"{figures['disk_mb']:>9.1f}"
            )
        ours, theirs = by_tool["tessera"], by_tool["mlflow"]
        print(
            f"{model_name:<10} ratio    mlflow/tessera wall x{theirs['wall_s'] / max(ours['wall_s'], 1e-3):.0f}, "
            f"CPU x{theirs['cpu_s'] / max(ours['cpu_s'], 1e-3):.0f}"
        )
    print(json.dumps({"runs": runs, "load_average": os.getloadavg(), "results": results}))


if __name__ == "__main__":
    stopping.run(main)
