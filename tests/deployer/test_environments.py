"""Per-model environments, for real: models saved with the real mlflow client and their logged requirements,
environments built by uv from PyPI, model servers started in them, deployments rolled out by a real worker.

Building an environment is the slow part, so the one with the extra requirement is built once for the
session (by two threads at once, which is itself a test of the lock).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow.pyfunc
import pandas as pd
import pytest
import sklearn
from typer.testing import CliRunner

from services.deployer.domain.environments import (
    EnvironmentBuildFailed,
    ModelEnvironments,
    PlannedEnvironment,
    installer_message,
    logged_requirements,
    unmet_requirements,
)
from services.deployer.domain.process_manager import ModelServerSpec, ProcessManager
from shared.db.models import Model, ModelVersion
from tessera.cli import app as cli_app
from tests import factories
from tests.conftest import wait_for

# A small pure-Python package the platform does not install; the model's predict imports it.
EXTRA = "roman==4.2"
MISSING = "tessera-no-such-package-0123==1.0"


class RomanNumerals(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        import roman  # only in the model's own environment

        return [roman.toRoman(int(number)) for number in model_input["n"]]


def save_model(directory: Path, requirements: list[str]) -> Path:
    mlflow.pyfunc.save_model(str(directory), python_model=RomanNumerals(), pip_requirements=requirements)
    return directory


@dataclass(frozen=True)
class BuiltEnvironment:
    model_dir: Path
    planned: PlannedEnvironment
    built_by: list[bool]  # what each of the concurrent builders answered


@pytest.fixture(scope="session")
def environments(tmp_path_factory: pytest.TempPathFactory) -> ModelEnvironments:
    return ModelEnvironments(tmp_path_factory.mktemp("model-envs"), build_timeout_s=300)


@pytest.fixture(scope="session")
def roman_environment(environments, tmp_path_factory) -> BuiltEnvironment:
    model_dir = save_model(tmp_path_factory.mktemp("models") / "roman", [EXTRA])
    planned = environments.plan(model_dir, "auto")
    assert planned is not None
    built_by: list[bool] = []
    builders = [threading.Thread(target=lambda: built_by.append(environments.build(planned))) for _ in range(2)]
    for builder in builders:
        builder.start()
    for builder in builders:
        builder.join()
    return BuiltEnvironment(model_dir, planned, built_by)


def in_environment(python: Path | str, code: str) -> str:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_concurrent_builds_of_one_environment_build_it_once(roman_environment, environments):
    assert sorted(roman_environment.built_by) == [False, True]
    assert roman_environment.planned.requirements == (EXTRA,)
    # Asked again (a restart, another deployment of the model): the cached environment, nothing built.
    assert environments.build(roman_environment.planned) is False
    assert environments.interpreter(roman_environment.model_dir, "auto") == str(roman_environment.planned.python)


def test_a_model_with_an_extra_requirement_serves_from_its_own_environment(roman_environment, environments, tmp_path):
    assert importlib.util.find_spec("roman") is None, "the platform's environment must lack the extra package"
    manager = ProcessManager(tmp_path / "logs", ready_timeout_s=60.0, environments=environments)
    state = manager.start(ModelServerSpec(model_uri=str(roman_environment.model_dir), name="roman", version="1"))
    try:
        answer = httpx.post(
            f"{state.url}/invocations",
            json={"dataframe_split": {"columns": ["n"], "data": [[4], [14], [1999]]}},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": ["IV", "XIV", "MCMXCIX"]}
        command = Path(f"/proc/{state.pid}/cmdline").read_bytes().split(b"\0")
        assert command[0].decode() == str(roman_environment.planned.python)
    finally:
        manager.stop(state)


def test_the_environment_adds_to_the_platform_packages_and_a_differing_version_shadows_the_platform(
    roman_environment, environments, tmp_path
):
    python = roman_environment.planned.python
    # Its own package from itself, the server's libraries from the platform.
    where = in_environment(python, "import roman, mlflow; print(roman.__file__); print(mlflow.__file__)").splitlines()
    assert where[0].startswith(str(roman_environment.planned.path))
    assert where[1] == mlflow.__file__
    # A model pinned to another version of a package the platform has gets that version, in its environment.
    platform_sniffio = importlib.metadata.version("sniffio")
    other = "1.3.0" if platform_sniffio != "1.3.0" else "1.2.0"
    (tmp_path / "requirements.txt").write_text(f"sniffio=={other}\n")
    planned = environments.plan(tmp_path, "auto")
    assert planned is not None and planned.requirements == (f"sniffio=={other}",)
    environments.build(planned)
    shadowed = in_environment(planned.python, "import importlib.metadata as m, sniffio; print(m.version('sniffio'))")
    assert (shadowed, importlib.metadata.version("sniffio")) == (other, platform_sniffio)


def test_a_model_whose_requirements_the_platform_meets_builds_nothing(environments, tmp_path):
    pinned = [f"scikit-learn=={sklearn.__version__}", f"pandas=={pd.__version__}", "cloudpickle", "numpy>=1.20"]
    model_dir = save_model(tmp_path / "model", pinned)
    assert set(pinned) <= set(logged_requirements(model_dir))
    before = sorted(environments.root.iterdir())
    assert unmet_requirements(logged_requirements(model_dir)) == []
    assert environments.plan(model_dir, "auto") is None
    assert environments.interpreter(model_dir, "auto") == sys.executable
    # `local` never builds, even for a model that would need it; `virtualenv` always does.
    assert environments.plan(save_model(tmp_path / "extra", [EXTRA]), "local") is None
    always = environments.plan(model_dir, "virtualenv")
    assert always is not None and set(always.requirements) == set(pinned)
    assert sorted(environments.root.iterdir()) == before


def test_requirements_that_cannot_be_installed_fail_with_the_installer_message(environments, tmp_path):
    model_dir = save_model(tmp_path / "model", [MISSING])
    with pytest.raises(EnvironmentBuildFailed) as failure:
        environments.interpreter(model_dir, "auto")
    assert "tessera-no-such-package-0123 was not found in the package registry" in failure.value.message
    assert "\n" not in failure.value.message
    # Nothing half-built is left to be mistaken for an environment.
    planned = environments.plan(model_dir, "auto")
    assert planned is not None and not planned.path.exists()


def test_the_installer_message_is_one_line_without_progress():
    output = (
        "Using Python 3.11.7 environment at: /envs/x\n"
        "  \u00d7 No solution found when resolving dependencies:\n"
        "  ╰─▶ Because nope was not found in the package registry, your requirements are unsatisfiable.\n"
    )
    assert installer_message(output) == (
        "No solution found when resolving dependencies: Because nope was not found in the package registry, "
        "your requirements are unsatisfiable."
    )


# --- through the API, the worker and the command line ----------------------------------------------


@pytest.fixture(scope="module")
def tenant(db, settings) -> factories.Tenant:
    with db.session_scope() as session:
        return factories.make_tenant(session, jwt_secret=settings.jwt_secret)


@pytest.fixture(scope="module")
def registered(db, tenant, tmp_path_factory) -> Iterator[str]:
    """A registered model: version 1 needs the extra package, version 2 a package that does not exist."""
    directory = tmp_path_factory.mktemp("registered")
    paths = [save_model(directory / "extra", [EXTRA]), save_model(directory / "missing", [MISSING])]
    name = factories.unique("roman")
    with db.session_scope() as session:
        model = Model(project_id=tenant.project_id, name=name, last_version=len(paths))
        session.add(model)
        session.flush()
        for number, path in enumerate(paths, start=1):
            session.add(ModelVersion(model_id=model.id, version=number, artifact_uri=str(path), source=str(path)))
    yield name


def _deploy(url: str, tenant, name: str, model: str, version: int) -> dict:
    answer = httpx.post(
        f"{url}/api/v1/deployments",
        json={"name": name, "model": model, "version": version},
        headers=tenant.headers,
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_a_deployment_builds_the_model_environment_and_serves_from_it(live_server, celery_worker, tenant, registered):
    deployment = _deploy(live_server.url, tenant, factories.unique("roman-prod"), registered, 1)
    assert deployment["config"]["env_manager"] == "auto"
    url, headers = f"{live_server.url}/api/v1/deployments/{deployment['id']}", tenant.headers
    try:

        def settled() -> dict | None:
            body = httpx.get(url, headers=headers).json()
            return body if body["status"] not in ("pending", "building_environment", "deploying") else None

        body = wait_for(settled, timeout=180, what="the rollout", every=0.2)
        assert body["status"] == "healthy", body
        # The rollout went through building the environment (the stage after it is recorded only then).
        history = httpx.get(f"{url}/history", headers=headers).json()["items"]
        assert history[0]["details"]["stage"] == "starting", history[0]

        def prediction() -> httpx.Response | None:
            answer = httpx.post(
                f"{live_server.url}/deployments/{deployment['id']}/invocations",
                json={"dataframe_split": {"columns": ["n"], "data": [[9]]}},
                headers=headers,
                timeout=30,
            )
            return answer if answer.status_code == 200 else None

        assert wait_for(prediction, timeout=30, what="the gateway's route").json() == {"predictions": ["IX"]}
    finally:
        httpx.post(f"{url}/stop", headers=headers)


def test_a_deployment_whose_requirements_cannot_be_installed_fails_with_the_installer_message(
    live_server, celery_worker, tenant, registered
):
    name = factories.unique("roman-broken")
    cli = CliRunner().invoke(
        cli_app,
        ["deployments", "deploy", name, "--model", registered, "--version", "2", "--timeout", "180"],
        env={"TESSERA_URL": live_server.url, "TESSERA_API_KEY": tenant.api_key, "COLUMNS": "250"},
    )
    expected = "tessera-no-such-package-0123 was not found in the package registry"
    assert cli.exit_code != 0 and expected in cli.output, cli.output
    error_lines = [line for line in cli.output.splitlines() if expected in line]
    assert len(error_lines) == 1 and error_lines[0].startswith(f"Error: Deployment {name}:"), cli.output
    found = httpx.get(f"{live_server.url}/api/v1/deployments", headers=tenant.headers).json()["items"]
    deployment = next(item for item in found if item["name"] == name)
    assert deployment["status"] == "failed" and expected in deployment["status_reason"]
    assert "\n" not in deployment["status_reason"]
    history = httpx.get(
        f"{live_server.url}/api/v1/deployments/{deployment['id']}/history", headers=tenant.headers
    ).json()["items"]
    assert (history[0]["outcome"], history[0]["details"]["stage"]) == ("failed", "building_environment")
    assert expected in history[0]["reason"] and "\n" not in history[0]["reason"]
