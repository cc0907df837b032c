"""Model-server processes: start failures with clear reasons, supervision after a crash, clean stops."""

from __future__ import annotations

import os
import signal
import socket
import time
from datetime import UTC, datetime

import httpx
import pytest

from services.deployer.domain.process_manager import (
    ModelServerError,
    ModelServerSpec,
    ModelServerState,
    ProcessManager,
    free_port,
    port_is_free,
)
from tests.deployer.conftest import SavedModel

pytestmark = pytest.mark.slow


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_bad_model_uri_fails_with_the_load_error_as_reason(process_manager: ProcessManager, tmp_path):
    missing = tmp_path / "no-such-model"

    with pytest.raises(ModelServerError) as failure:
        process_manager.start(ModelServerSpec(model_uri=str(missing), name="ghost", version="1"))

    reason = failure.value.reason
    assert "ghost v1 exited with code 3 before becoming ready" in reason
    assert f"failed to load model from '{missing}'" in reason


def test_unspawnable_server_is_a_model_server_error(tmp_path):
    broken = ProcessManager(tmp_path / "logs", python_executable=str(tmp_path / "no-python"))

    with pytest.raises(ModelServerError) as failure:
        broken.start(ModelServerSpec(model_uri="models:/m/1", name="m", version="1"))

    assert "could not be spawned" in failure.value.reason
    assert "no-python" in failure.value.reason


def test_server_that_never_gets_ready_is_killed_and_reported(iris_model: SavedModel, tmp_path):
    impatient = ProcessManager(tmp_path / "logs", ready_timeout_s=0.3, stop_grace_s=5.0)

    with pytest.raises(ModelServerError) as failure:
        impatient.start(ModelServerSpec(model_uri=str(iris_model.path), name="slow", version="1"))

    assert "did not become ready within 0.3s and was killed" in failure.value.reason


def test_supervision_restarts_a_killed_server_and_stop_leaves_nothing_behind(
    process_manager: ProcessManager, iris_model: SavedModel
):
    spec = ModelServerSpec(model_uri=str(iris_model.path), name="iris-supervised", version="1")
    first = process_manager.start(spec)
    # Our own pid is alive but is not a model server on that port: a reused pid must not count.
    impostor = ModelServerState(pid=os.getpid(), port=first.port, started_at=first.started_at, log_path="x")
    assert process_manager.is_running(first)
    assert not process_manager.is_running(impostor)
    assert process_manager.supervise_once([(spec, first)])[0].action == "running"

    # A crash: restarted on the same port, so the recorded endpoint stays valid.
    os.kill(first.pid, signal.SIGKILL)
    _wait_until_gone(first.pid)
    (outcome,) = process_manager.supervise_once([(spec, first)])
    assert outcome.action == "restarted" and outcome.state is not None
    second = outcome.state
    assert second.pid != first.pid
    assert second.port == first.port
    assert _predict_two_rows(second, iris_model) == 2
    # The record survives a round trip through the deployment row's JSON column.
    assert ModelServerState.from_dict(second.to_dict()) == second

    # Another crash, and meanwhile something else took the port: the server moves to a free one.
    os.kill(second.pid, signal.SIGKILL)
    _wait_until_gone(second.pid)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", second.port))
        squatter.listen()
        (outcome,) = process_manager.supervise_once([(spec, second)])
    assert outcome.action == "restarted" and outcome.state is not None
    third = outcome.state
    try:
        assert third.port != second.port
        assert _predict_two_rows(third, iris_model) == 2
    finally:
        process_manager.stop(third)

    assert not process_manager.is_running(third)
    assert not _group_exists(third.pid)
    assert port_is_free(third.port)
    # Stopping twice (a redelivered task) is harmless.
    process_manager.stop(third)


def test_supervision_reports_a_server_that_cannot_come_back(process_manager: ProcessManager, tmp_path):
    spec = ModelServerSpec(model_uri=str(tmp_path / "deleted-model"), name="gone", version="2")
    dead = ModelServerState(pid=2**22 + 1, port=free_port(), started_at=datetime.now(UTC), log_path="x")

    (outcome,) = process_manager.supervise_once([(spec, dead)])

    assert outcome.action == "failed"
    assert outcome.state is None
    assert outcome.reason is not None and "failed to load model" in outcome.reason


def _predict_two_rows(state: ModelServerState, model: SavedModel) -> int:
    response = httpx.post(
        f"{state.url}/invocations",
        json={"dataframe_records": model.features.head(2).to_dict(orient="records")},
    )
    assert response.status_code == 200, response.text
    return len(response.json()["predictions"])


def _wait_until_gone(pid: int) -> None:
    # SIGKILL is asynchronous; the port is only released once the process is really gone.
    for _ in range(100):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        time.sleep(0.02)


def test_free_port_and_port_is_free():
    port = free_port()
    assert port_is_free(port)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert not port_is_free(port)


def test_stop_owned_stops_this_platforms_servers_recorded_or_not_and_no_others(iris_model: SavedModel, tmp_path):
    """What `tessera up` does on exit after stopping the recorded servers: a server a worker started but
    never recorded (it was stopped mid-start) is found by its owner, another platform's is left alone."""
    process_manager = ProcessManager(tmp_path / "this-platform", ready_timeout_s=60)
    spec = ModelServerSpec(model_uri=str(iris_model.path), name="iris-owned", version="1")
    unrecorded = process_manager.start(spec)
    other_platform = ProcessManager(tmp_path / "other-platform", ready_timeout_s=60)
    others = other_platform.start(spec)
    try:
        assert process_manager.stop_owned() == 1
        assert not process_manager.is_running(unrecorded) and not _group_exists(unrecorded.pid)
        assert other_platform.is_running(others)
        assert process_manager.stop_owned() == 0
    finally:
        other_platform.stop(others)
