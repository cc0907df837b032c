"""Spawning, supervising and stopping local model-server processes.

State is a small serialisable record (pid, port, started_at, log path) because the deployment row stores it
and a different process (an API worker, a Celery worker) may be the one that later supervises or stops the
server. Processes are therefore identified by pid *and* command line, never by a Popen handle.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from services.deployer.domain.environments import EnvironmentBuildFailed, EnvManager, ModelEnvironments
from services.deployer.model_server import PID_HEADER
from shared.core.errors import TesseraError

SERVER_MODULE = "services.deployer.model_server"
LOCALHOST = "127.0.0.1"
_PORT_CLASH = re.compile(r"address already in use", re.IGNORECASE)
_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class ModelServerError(TesseraError):
    """A model server could not be started; `reason` is fit for an operator (it ends with the log tail)."""

    @property
    def reason(self) -> str:
        return self.message


@dataclass(frozen=True)
class ModelServerSpec:
    """What to serve: enough to (re)start the same server."""

    model_uri: str
    name: str
    version: str
    # Which Python environment serves it (see environments.py); used when the manager has `environments`.
    env_manager: EnvManager = "auto"


@dataclass(frozen=True)
class ModelServerState:
    """A running server, as the deployment row stores it."""

    pid: int
    port: int
    started_at: datetime
    log_path: str
    host: str = LOCALHOST

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "started_at": self.started_at.isoformat()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelServerState:
        return cls(**{**data, "started_at": datetime.fromisoformat(data["started_at"])})


@dataclass(frozen=True)
class SupervisionOutcome:
    spec: ModelServerSpec
    # The state to store: the old one when nothing happened, the new one after a restart, None if it failed.
    state: ModelServerState | None
    action: Literal["running", "restarted", "failed"]
    reason: str | None = None


class ProcessManager:
    def __init__(
        self,
        log_dir: Path,
        *,
        ready_timeout_s: float = 60.0,
        stop_grace_s: float = 5.0,
        poll_interval_s: float = 0.1,
        port_attempts: int = 5,
        python_executable: str = sys.executable,
        environments: ModelEnvironments | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.ready_timeout_s = ready_timeout_s
        self.stop_grace_s = stop_grace_s
        self.poll_interval_s = poll_interval_s
        self.port_attempts = port_attempts
        self.python_executable = python_executable
        self.environments = environments

    def start(self, spec: ModelServerSpec, *, preferred_port: int | None = None) -> ModelServerState:
        """Start a server and wait until it answers /ping; raise ModelServerError with the reason if not.

        `preferred_port` is tried first (a restart keeps its address); a port taken between our bind test and
        the server's own bind just moves on to another free port.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        python = self._interpreter(spec)
        last_clash = ""
        for attempt in range(self.port_attempts):
            if attempt == 0 and preferred_port is not None and port_is_free(preferred_port):
                port = preferred_port
            else:
                port = free_port()
            try:
                process, log_path, log_offset = self._spawn(spec, port, python)
            except OSError as exc:
                # An unwritable log directory or a missing interpreter: nothing to retry on another port.
                raise ModelServerError(
                    f"model server for {spec.name} v{spec.version} could not be spawned: {exc}"
                ) from exc
            failure = self._wait_until_ready(process, port, log_path, log_offset)
            if failure is None:
                return ModelServerState(
                    pid=process.pid, port=port, started_at=datetime.now(UTC), log_path=str(log_path)
                )
            if not _PORT_CLASH.search(failure):
                raise ModelServerError(f"model server for {spec.name} v{spec.version} {failure}")
            last_clash = failure
        raise ModelServerError(
            f"model server for {spec.name} v{spec.version} found no free port in {self.port_attempts} "
            f"attempts; last: {last_clash}"
        )

    def stop(self, state: ModelServerState) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after the grace period; no-op if gone."""
        if not self.is_running(state):
            return
        _signal_group(state.pid, signal.SIGTERM)
        if not _wait_for_group_exit(state.pid, self.stop_grace_s):
            _signal_group(state.pid, signal.SIGKILL)
            _wait_for_group_exit(state.pid, self.stop_grace_s)

    def stop_owned(self) -> int:
        """Stop every server this platform started, recorded or not (a worker stopped while it was starting
        one never recorded it); returns how many were running."""
        owner = str(self.log_dir).encode()
        owned = []
        for proc in Path("/proc").iterdir():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0") if proc.name.isdigit() else []
            except OSError:  # gone meanwhile
                continue
            port = _arg_value(cmdline, b"--port")
            if SERVER_MODULE.encode() in cmdline and _arg_value(cmdline, b"--owner") == owner and port:
                owned.append(
                    ModelServerState(pid=int(proc.name), port=int(port), started_at=datetime.now(UTC), log_path="")
                )
        running = [state for state in owned if self.is_running(state)]
        for state in running:
            self.stop(state)
        return len(running)

    def is_running(self, state: ModelServerState) -> bool:
        """True when the pid is alive, not a zombie, and still our server on that port (pids get reused)."""
        _reap(state.pid)
        if not _pid_alive(state.pid):
            return False
        try:
            cmdline = Path(f"/proc/{state.pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return False
        return SERVER_MODULE.encode() in cmdline and _arg_value(cmdline, b"--port") == str(state.port).encode()

    def ensure_running(self, spec: ModelServerSpec, state: ModelServerState | None) -> SupervisionOutcome:
        """Restart the server if its process died (on the same port when it is still free)."""
        if state is not None and self.is_running(state):
            return SupervisionOutcome(spec, state, "running")
        try:
            new_state = self.start(spec, preferred_port=state.port if state else None)
        except ModelServerError as exc:
            return SupervisionOutcome(spec, None, "failed", exc.reason)
        reason = f"process {state.pid} had exited" if state else "no process was recorded"
        return SupervisionOutcome(spec, new_state, "restarted", reason)

    def supervise_once(
        self, servers: Iterable[tuple[ModelServerSpec, ModelServerState | None]]
    ) -> list[SupervisionOutcome]:
        """One pass of the periodic supervision task; one server's failure does not stop the others."""
        return [self.ensure_running(spec, state) for spec, state in servers]

    def _interpreter(self, spec: ModelServerSpec) -> str:
        """The model's own environment's Python (built on first use) or the platform's."""
        if self.environments is None:
            return self.python_executable
        try:
            return self.environments.interpreter(Path(spec.model_uri), spec.env_manager)
        except EnvironmentBuildFailed as exc:
            raise ModelServerError(f"model server for {spec.name} v{spec.version}: {exc.message}") from exc

    def _spawn(self, spec: ModelServerSpec, port: int, python: str) -> tuple[subprocess.Popen[bytes], Path, int]:
        # Per port as well, so two deployments of one version never interleave their logs.
        log_path = self.log_dir / _UNSAFE_FILENAME_CHARS.sub("_", f"{spec.name}-v{spec.version}-{port}.log")
        command = [
            python,
            "-m",
            SERVER_MODULE,
            "--model-uri",
            spec.model_uri,
            "--name",
            spec.name,
            "--version",
            spec.version,
            "--host",
            LOCALHOST,
            "--port",
            str(port),
            "--owner",
            str(self.log_dir),
        ]
        # Appending keeps the history of restarts; the offset lets us read only this attempt's output.
        with log_path.open("ab") as log:
            log_offset = log.tell()
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session and process group: it outlives the worker that spawned it, and a stop
                # signals the whole group.
                start_new_session=True,
            )
        return process, log_path, log_offset

    def _wait_until_ready(
        self, process: subprocess.Popen[bytes], port: int, log_path: Path, log_offset: int
    ) -> str | None:
        """None once /ping answers from this very process, else why it never did."""
        deadline = time.monotonic() + self.ready_timeout_s
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                exit_code = process.poll()
                if exit_code is not None:
                    tail = _log_tail(log_path, log_offset)
                    return f"exited with code {exit_code} before becoming ready: {tail}"
                with contextlib.suppress(httpx.HTTPError):
                    response = client.get(f"http://{LOCALHOST}:{port}/ping")
                    if response.status_code == 200 and response.headers.get(PID_HEADER) == str(process.pid):
                        return None
                time.sleep(self.poll_interval_s)
        _signal_group(process.pid, signal.SIGKILL)
        process.wait(timeout=self.stop_grace_s)
        return (
            f"did not become ready within {self.ready_timeout_s:g}s and was killed: {_log_tail(log_path, log_offset)}"
        )


def free_port() -> int:
    """A port the kernel considers free right now; the caller must cope with losing a race for it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option uvicorn sets, so a port in TIME_WAIT after a crash still counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
        return True


def _log_tail(log_path: Path, offset: int, max_lines: int = 15, max_chars: int = 2000) -> str:
    with log_path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode("utf-8", errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return "(the log is empty)"
    return "\n".join(lines[-max_lines:])[-max_chars:]


def _arg_value(cmdline: list[bytes], flag: bytes) -> bytes | None:
    try:
        return cmdline[cmdline.index(flag) + 1]
    except (ValueError, IndexError):
        return None


def _signal_group(pid: int, signum: signal.Signals) -> None:
    # The server leads its own group (start_new_session), so its pid is the group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _reap(pid: int) -> None:
    """Collect the exit status if the server is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _wait_for_group_exit(pgid: int, timeout_s: float) -> bool:
    """Wait until no live process is left in the group (the server and anything it spawned)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _live_group_members(pgid):
            # The leader is dead now, so this reap cannot miss it.
            _reap(pgid)
            return True
        _reap(pgid)
        time.sleep(0.05)
    return False


def _stat_fields(path: Path) -> list[str] | None:
    """Fields of a /proc stat file after the command name (state, ppid, pgrp, ...); None if it is gone.

    Linux-only by design: /proc tells a zombie (exited, not yet reaped) from a live process.
    """
    try:
        stat = path.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is parenthesised and may itself contain spaces or parentheses.
    return stat.rpartition(")")[2].split()


def _pid_alive(pid: int) -> bool:
    """Any thread still running: a multithreaded process whose main thread has exited shows state Z for the
    leader while its other threads are still finishing."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return False
    return any((fields := _stat_fields(task / "stat")) is not None and fields[0] not in "ZX" for task in tasks)


def _live_group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(entry / "stat")
            if fields is not None and fields[2] == str(pgid) and _pid_alive(int(entry.name)):
                members.append(int(entry.name))
    return members
