"""MLflow's UI served by Tessera vs served by `mlflow server` 3.17.2: the same data in both, on the same
PostgreSQL, pages loaded in headless Chromium (Debian's), side by side, printing both and the ratio.

    .venv/bin/python bench/ui_vs_mlflow.py                      # 2,000 runs, 5 loads per page
    .venv/bin/python bench/ui_vs_mlflow.py --runs 10000 --loads 5

Pages: an experiment's runs table (until its first run row shows), a 5-run x 50-step metric chart (until
a line is drawn), the experiments list (until the experiment shows). Each load is in a fresh browser
context (empty cache: what a new visitor pays); a second load in the same context shows what the cache
saves. For every API call a page makes, the server time is the browser's own measure (request sent to
first response byte, Resource Timing), median over the loads. CPU is each server's user + system time
(all its workers) over the page loads. Both servers run the way their seeding helpers in
tracking_vs_mlflow.py start them: Tessera's tracking app (which serves the UI) under uvicorn with one
worker per core, MLflow with its defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import stopping  # noqa: E402
import tracking_vs_mlflow as infra  # noqa: E402  (the servers, scratch databases and COPY seeding)

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "bench-password"
CHART_RUNS, CHART_STEPS = 5, 50


def _set_tessera_password(database_url: str) -> str:
    """The bench tenant's user gets a password, so the browser can sign in as it."""
    from sqlalchemy import select

    from shared.core.security import hash_password
    from shared.db.models import User
    from shared.db.session import Database

    db = Database(database_url)
    with db.session_scope() as session:
        user = session.scalars(select(User).where(User.email.like("bench-%"))).one()
        user.password_hash = hash_password(PASSWORD)
        email = user.email
    db.dispose()
    return email


def _seed(url: str, api_key: str | None, runs: int, seed_runs) -> dict[str, str]:
    """A big experiment (COPY-seeded) and a small one with metric curves (through the mlflow client)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    if api_key:
        os.environ["MLFLOW_TRACKING_TOKEN"] = api_key
    else:
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    client = MlflowClient(url)
    big = client.create_experiment(f"runs-table-{runs}")
    seed_runs(big)
    chart = client.create_experiment("chart-5x50")
    now = int(time.time() * 1000)
    for index in range(CHART_RUNS):
        run_id = client.create_run(chart, run_name=f"trial-{index}").info.run_id
        points = [Metric("loss", 1.0 / (step + 1 + index), now + step, step) for step in range(CHART_STEPS)]
        client.log_batch(run_id, metrics=points, params=[Param("trial", str(index))])
        client.set_terminated(run_id)
    return {"big": big, "chart": chart}


class Measured:
    """Page load times and API server times of one server."""

    def __init__(self) -> None:
        self.loads: dict[str, list[float]] = defaultdict(list)
        self.second_loads: dict[str, list[float]] = defaultdict(list)
        self.api_ms: dict[str, list[float]] = defaultdict(list)


def _api_key_of(url: str) -> str | None:
    path = urlsplit(url).path
    if path.startswith(("/ajax-api/", "/graphql", "/get-artifact")):
        return path
    return None


def _load(browser, base: str, route: str, ready: str, measured: Measured, page_name: str, sign_in: tuple | None):
    context = browser.new_context(base_url=base, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    if sign_in:
        page.goto("/login")
        page.fill("#email", sign_in[0])
        page.fill("#password", sign_in[1])
        page.click("button[type=submit]")
        page.wait_for_url(lambda u: "/login" not in u)
        page.goto("about:blank")
    for attempt in ("fresh", "second"):
        started = time.perf_counter()
        page.goto(f"{base}/#{route}")
        page.locator(ready).first.wait_for(timeout=120_000)
        elapsed = time.perf_counter() - started
        (measured.loads if attempt == "fresh" else measured.second_loads)[page_name].append(elapsed)
        if attempt == "fresh":
            page.wait_for_timeout(500)  # the page's late calls land too
            entries = page.evaluate(
                "performance.getEntriesByType('resource').map(e => [e.name, e.responseStart - e.requestStart])"
            )
            for name, server_ms in entries:
                key = _api_key_of(name)
                if key and server_ms > 0:
                    measured.api_ms[f"{page_name} {key}"].append(server_ms)
        page.goto("about:blank")
    context.close()


def measure(base: str, ids: dict[str, str], names: dict[str, str], loads: int, sign_in, pid: int) -> dict:
    from playwright.sync_api import sync_playwright

    measured = Measured()
    pages = {
        "runs_table": (f"/experiments/{ids['big']}/runs", "a:has-text('run-1')"),
        "chart": (f"/experiments/{ids['chart']}/runs?compareRunsMode=CHART", ".js-plotly-plot path.js-line"),
        "experiments_list": ("/experiments", f"text={names['big']}"),
    }
    cpu_before = infra.cpu_seconds(pid)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for _ in range(loads):
            for name, (route, ready) in pages.items():
                _load(browser, base, route, ready, measured, name, sign_in)
        browser.close()
    return {
        "page_s": {name: statistics.median(v) for name, v in measured.loads.items()},
        "second_load_s": {name: statistics.median(v) for name, v in measured.second_loads.items()},
        "api_ms": {key: statistics.median(v) for key, v in sorted(measured.api_ms.items())},
        "cpu_s": infra.cpu_seconds(pid) - cpu_before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2_000, help="runs in the runs-table experiment")
    parser.add_argument("--loads", type=int, default=5, help="fresh loads of each page (the median is printed)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="Tessera uvicorn workers")
    options = parser.parse_args()

    names = {"big": f"runs-table-{options.runs}"}
    with infra.Servers(options.workers) as servers:
        email = _set_tessera_password(servers.tessera_sqlalchemy_url)
        tessera_ids = _seed(
            servers.tessera_url, servers.api_key, options.runs,
            lambda exp: infra.seed_tessera_runs(servers.tessera_sqlalchemy_url, exp, options.runs),
        )  # fmt: skip
        mlflow_ids = _seed(
            servers.mlflow_url, None, options.runs,
            lambda exp: infra.seed_mlflow_runs(servers.mlflow_db, exp, options.runs),
        )  # fmt: skip
        tessera_pid, mlflow_pid = servers.procs[0].pid, servers.procs[1].pid
        results = {
            "mlflow": measure(servers.mlflow_url, mlflow_ids, names, options.loads, None, mlflow_pid),
            "tessera": measure(servers.tessera_url, tessera_ids, names, options.loads, (email, PASSWORD), tessera_pid),
        }

    tessera, mlflow = results["tessera"], results["mlflow"]
    print(
        f"\nMLflow UI pages, {options.runs:,} runs, median of {options.loads} fresh loads (load: "
        f"{os.getloadavg()[0]:.1f})"
    )
    print(f"{'page':<20}{'mlflow s':>10}{'tessera s':>11}{'ratio':>8}   second load: mlflow / tessera s")
    for page in mlflow["page_s"]:
        ratio = tessera["page_s"][page] / mlflow["page_s"][page]
        print(
            f"{page:<20}{mlflow['page_s'][page]:>10.2f}{tessera['page_s'][page]:>11.2f}{ratio:>8.2f}   "
            f"{mlflow['second_load_s'][page]:.2f} / {tessera['second_load_s'][page]:.2f}"
        )
    print(f"\n{'API call (page, path)':<80}{'mlflow ms':>10}{'tessera ms':>11}{'ratio':>8}")
    for key in sorted(set(mlflow["api_ms"]) | set(tessera["api_ms"])):
        m, t = mlflow["api_ms"].get(key), tessera["api_ms"].get(key)
        ratio = f"{t / m:.2f}" if m and t else "-"
        print(f"{key:<80}{m if m is None else round(m, 1)!s:>10}{t if t is None else round(t, 1)!s:>11}{ratio:>8}")
    print(
        f"\nserver CPU over the page loads: mlflow {mlflow['cpu_s']:.1f} s, tessera {tessera['cpu_s']:.1f} s "
        f"(ratio {tessera['cpu_s'] / max(mlflow['cpu_s'], 1e-9):.2f})"
    )
    print(json.dumps({"runs": options.runs, "loads": options.loads, **results}))


if __name__ == "__main__":
    stopping.run(main)
