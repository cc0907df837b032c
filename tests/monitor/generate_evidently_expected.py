"""Write `evidently_expected.json`: Evidently 0.7's column type, method, score, threshold and verdict for
each case of `evidently_cases.py`. Evidently is not a Tessera dependency; run this in its own venv:

    python3.11 -m venv /tmp/ev && /tmp/ev/bin/pip install "evidently==0.7.*" "pandas<3" pyarrow
    /tmp/ev/bin/python tests/monitor/generate_evidently_expected.py
"""

from __future__ import annotations

import json
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tests.monitor.evidently_cases import build_cases  # noqa: E402

# Evidently's display names of its default methods.
METHODS = {
    "K-S p_value": "ks",
    "Wasserstein distance (normed)": "wasserstein",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
    "Jensen-Shannon distance": "jensenshannon",
}
# Evidently's ColumnType values, as Tessera names them.
TYPES = {"num": "numerical", "cat": "categorical", "text": "text", "datetime": "datetime"}


def evidently_column(reference, current) -> dict:
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    snapshot = Report([DataDriftPreset()]).run(current, reference)
    (metric,) = [m for m in snapshot.dict()["metrics"] if m["config"]["type"].endswith("ValueDrift")]
    config = metric["config"]
    method, score, threshold = METHODS[config["method"]], float(metric["value"]), config["threshold"]
    # Evidently's rule per method (evidently/legacy/calculations/stattests/*.py).
    if method == "ks":
        drift = score <= threshold
    elif method in ("chisquare", "z"):
        drift = score < threshold
    else:
        drift = score >= threshold
    return {
        "column_type": TYPES[Dataset.from_pandas(current).column("x").type.value],
        "method": method,
        "score": score,
        "threshold": threshold,
        "drift": drift,
    }


def main() -> None:
    warnings.filterwarnings("ignore")
    expected = {name: evidently_column(reference, current) for name, (reference, current) in build_cases().items()}
    output = {"evidently": version("evidently"), "cases": expected}
    (HERE / "evidently_expected.json").write_text(json.dumps(output, indent=2) + "\n")
    for name, column in expected.items():
        print(f"{name:40} {column['column_type']:12} {column['method']:14} {column['score']:.6g} {column['drift']}")


if __name__ == "__main__":
    main()
