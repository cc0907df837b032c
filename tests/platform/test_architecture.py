"""The walls between packages, lint and types, checked with the suite so a crossed wall fails a build.

The import contracts are in pyproject.toml ([tool.importlinter]): services never import each other, shared/
imports no service and not tessera/, no service imports tessera/, domain code imports neither FastAPI
(nor Starlette) nor Celery. mypy's settings are there too ([tool.mypy]).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*command: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_import_contracts_hold():
    lint = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    result = _run(sys.executable, "-c", lint)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_ruff_finds_nothing_and_the_tree_is_formatted():
    checked = _run(sys.executable, "-m", "ruff", "check", "--no-cache", ".")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    formatted = _run(sys.executable, "-m", "ruff", "format", "--check", "--no-cache", ".")
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


@pytest.mark.slow
def test_shared_and_domain_code_type_check():
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_importing_the_platform_reads_no_settings_and_writes_no_file(tmp_path):
    """The Celery app and the services are assembled on first use: importing them creates no data folder,
    no secret and no broker folder."""
    data_dir = tmp_path / "data"
    modules = "tessera.cli, tessera.platform, tessera.worker, tessera.asgi"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TESSERA_DATA_DIR": str(data_dir)}
    for name in ("TESSERA_BROKER_URL", "TESSERA_DATABASE_URL", "TESSERA_ARTIFACT_ROOT"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-c", f"import {modules}; from tessera.worker import declarations; declarations()"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_worker_app_has_every_services_tasks_and_beat_entries():
    from tessera.worker import celery_app

    tasks = {name.split(".")[0] for name in celery_app.tasks if not name.startswith("celery.")}
    assert tasks == {"events", "deployer", "monitor", "notifier"}
    schedule = celery_app.conf.beat_schedule
    assert {entry["task"] for entry in schedule.values()} >= {
        "events.relay",
        "monitor.schedule_due_checks",
        "notifier.flush",
        "notifier.sweep",
        "deployer.supervise",
    }
    assert celery_app.conf.task_routes == {"notifier.dispatch": {"queue": "notifier.dispatch"}}
