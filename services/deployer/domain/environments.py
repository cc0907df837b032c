"""Per-model Python environments: a model version is served with the requirements MLflow logged with it.

MLflow logs `requirements.txt` next to the model (and `python_env.yaml` / `conda.yaml`, which list the same
pip requirements). With the `auto` manager, a model whose requirements the platform's installed packages
already satisfy is served in the platform's own environment and nothing is built; otherwise an environment
is built once for the requirements that are missing or differ, and cached under the data directory, keyed
by a hash of those requirements, the Python version and the platform's package versions. `virtualenv`
always builds one with all the model's requirements; `local` never builds (`mlflow models serve
--env-manager local`).

An environment is a virtualenv layered on the platform's: a `.pth` file appends the platform's
site-packages after the environment's own, so the model server's libraries (FastAPI, uvicorn, MLflow) come
from the platform while a package installed in the environment shadows the platform's version of it.
Packages the model does not name are constrained to the platform's versions, so installing a requirement
never swaps a library the server relies on. MLflow itself is the platform's (the server loads the model
with it), whatever version the model was logged with. uv installs: it is several times faster than pip.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from uv import find_uv_bin

from shared.core.errors import TesseraError

EnvManager = Literal["auto", "local", "virtualenv"]
ENV_MANAGERS: tuple[EnvManager, ...] = ("auto", "local", "virtualenv")
# What the model server itself loads the model with: always the platform's.
SERVING_LIBRARIES = frozenset({"mlflow", "mlflow-skinny"})
_READY_MARKER = ".tessera-ready"
_PLATFORM_PTH = "_tessera_platform.pth"
# uv's progress lines, and the labels and tree drawing of its error report.
_INSTALLER_NOISE = re.compile(r"^(Using Python|Resolved|Prepared|Installed|Uninstalled|Audited|Downloading|Building)\b")
_MESSAGE_PREFIX = re.compile(r"^(?:(?:error|cause|hint):|[\u00d7\u2570\u2500\u25b6\u2502 ]+)\s*")


class EnvironmentBuildFailed(TesseraError):
    """A model's requirements could not be installed; `message` is the installer's, on one line."""


@dataclass(frozen=True)
class PlannedEnvironment:
    """An environment a model needs: what to install, and where it lives once built."""

    requirements: tuple[str, ...]
    constraints: tuple[str, ...]
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def is_ready(self) -> bool:
        return (self.path / _READY_MARKER).is_file()

    def summary(self, limit: int = 5) -> str:
        shown = ", ".join(self.requirements[:limit])
        return shown + (f" and {len(self.requirements) - limit} more" if len(self.requirements) > limit else "")


def logged_requirements(model_dir: Path) -> list[str]:
    """The pip requirement lines MLflow logged with the model, as they are written; none when it logged none."""
    requirements_txt = model_dir / "requirements.txt"
    if requirements_txt.is_file():
        return _requirement_lines(requirements_txt.read_text())
    conda_yaml = model_dir / "conda.yaml"
    if conda_yaml.is_file():
        dependencies = (yaml.safe_load(conda_yaml.read_text()) or {}).get("dependencies") or []
        for dependency in dependencies:
            if isinstance(dependency, dict) and "pip" in dependency:
                return [str(line).strip() for line in dependency["pip"] if str(line).strip()]
    return []


def unmet_requirements(lines: list[str]) -> list[str]:
    """The lines the platform's installed packages do not satisfy (missing, another version, a URL, or a
    line only the installer understands), leaving out the serving libraries and the installer's options."""
    return [line for line in _installable(lines) if not _is_satisfied(line)]


class ModelEnvironments:
    """Plans, builds and caches model environments under `root`; safe across processes (a file lock per
    environment, so concurrent builds of the same one wait for each other instead of racing)."""

    def __init__(self, root: Path, *, build_timeout_s: float = 600.0, python_executable: str = sys.executable):
        self.root = root
        self.build_timeout_s = build_timeout_s
        self.python_executable = python_executable

    def plan(self, model_dir: Path, manager: EnvManager) -> PlannedEnvironment | None:
        """The environment the model needs, or None when it is served in the platform's own."""
        if manager == "local":
            return None
        lines = logged_requirements(model_dir)
        wanted = _installable(lines) if manager == "virtualenv" else unmet_requirements(lines)
        if not wanted:
            return None
        # The installer's own options (an index URL, ...) apply to what it installs.
        requirements = tuple([line for line in lines if _is_installer_option(line)] + wanted)
        named = {name for line in wanted if (name := _requirement_name(line)) is not None}
        constraints = tuple(line for name, line in _platform_pins().items() if name not in named)
        fingerprint = json.dumps(
            {"python": sys.version.split()[0], "requirements": sorted(requirements), "constraints": constraints}
        )
        key = hashlib.sha256(fingerprint.encode()).hexdigest()[:20]
        return PlannedEnvironment(requirements=requirements, constraints=constraints, path=self.root / key)

    def interpreter(self, model_dir: Path, manager: EnvManager) -> str:
        """The Python to serve the model with: its environment's (built now if it is not yet) or the
        platform's; raises EnvironmentBuildFailed with the installer's message."""
        planned = self.plan(model_dir, manager)
        if planned is None:
            return self.python_executable
        self.build(planned)
        return str(planned.python)

    def build(self, planned: PlannedEnvironment) -> bool:
        """Build the environment unless it is already there; True when this call built it."""
        self.root.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(planned.path.with_suffix(".lock")):
            if planned.is_ready:
                return False
            # Whatever a build cut short left behind.
            shutil.rmtree(planned.path, ignore_errors=True)
            try:
                self._install(planned)
            except BaseException:
                shutil.rmtree(planned.path, ignore_errors=True)
                raise
            (planned.path / _READY_MARKER).touch()
            return True

    def _install(self, planned: PlannedEnvironment) -> None:
        self._run_uv(
            "creating the model's environment",
            ["venv", "--quiet", "--python", self.python_executable, str(planned.path)],
        )
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        site_packages = planned.path / "lib" / version / "site-packages"
        # Appended after the environment's own site-packages (and their .pth files processed), so what is
        # installed here wins over the platform's copy.
        platform_dirs = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
        (site_packages / _PLATFORM_PTH).write_text(
            "".join(f"import site; site.addsitedir({directory!r})\n" for directory in platform_dirs)
        )
        requirements, constraints = planned.path / "requirements.txt", planned.path / "constraints.txt"
        requirements.write_text("\n".join(planned.requirements) + "\n")
        constraints.write_text("\n".join(planned.constraints) + "\n")
        self._run_uv(
            "installing the model's requirements",
            ["pip", "install", "--python", str(planned.python), "-r", str(requirements), "-c", str(constraints)],
        )

    def _run_uv(self, what: str, arguments: list[str]) -> None:
        command = [find_uv_bin(), *arguments, "--color", "never", "--no-progress"]
        try:
            completed = subprocess.run(
                command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=self.build_timeout_s
            )
        except subprocess.TimeoutExpired:
            raise EnvironmentBuildFailed(f"{what} did not finish within {self.build_timeout_s:g}s") from None
        if completed.returncode != 0:
            raise EnvironmentBuildFailed(f"{what} failed: {installer_message(completed.stderr or completed.stdout)}")


def installer_message(output: str, max_chars: int = 1000) -> str:
    """The installer's error on one line: its `error:` line and the causes below it, without progress."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    start = next((index for index, line in enumerate(lines) if line.startswith("error:")), None)
    kept = lines[start:] if start is not None else [line for line in lines if not _INSTALLER_NOISE.match(line)]
    parts = [part for line in kept if (part := _MESSAGE_PREFIX.sub("", line))]
    if len(parts) > 1 and not parts[0].endswith(":"):
        parts[0] += ":"
    return (" ".join(parts) or "the installer failed without a message")[:max_chars]


def _requirement_lines(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _installable(lines: list[str]) -> list[str]:
    """Requirement lines to hand to the installer: not its options, nor the serving libraries, nor lines
    whose environment markers exclude this platform."""
    kept = []
    for line in lines:
        if line.startswith("-") and not line.startswith(("-e", "--editable")):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            kept.append(line)  # a path or an editable: the installer will say what it makes of it
            continue
        if canonicalize_name(requirement.name) in SERVING_LIBRARIES:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        kept.append(line)
    return kept


def _is_installer_option(line: str) -> bool:
    """`--extra-index-url URL` and the like (not `-e`, an editable requirement, nor `-r`/`-c`, which name
    files the model does not carry)."""
    return line.startswith("-") and not line.startswith(
        ("-e", "--editable", "-r", "--requirement", "-c", "--constraint")
    )


def _requirement_name(line: str) -> str | None:
    try:
        return canonicalize_name(Requirement(line).name)
    except InvalidRequirement:
        return None


def _is_satisfied(line: str) -> bool:
    try:
        requirement = Requirement(line)
    except InvalidRequirement:
        return False
    if requirement.url:
        return False
    try:
        installed = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    if not requirement.specifier.contains(installed, prereleases=True):
        return False
    # `package[extra]` also needs what the extra adds.
    for extra in requirement.extras:
        for dependency in importlib.metadata.requires(requirement.name) or []:
            needed = Requirement(dependency)
            if (
                needed.marker is not None
                and needed.marker.evaluate({"extra": extra})
                and not _is_satisfied(str(needed).split(";")[0])
            ):
                return False
    return True


def _platform_pins() -> dict[str, str]:
    """`name==version` of every package installed in the platform's environment, by normalised name."""
    pins: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        if name:
            pins.setdefault(canonicalize_name(name), f"{name}=={distribution.version}")
    return dict(sorted(pins.items()))


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
