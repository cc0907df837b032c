"""Two gateway processes (`tessera serve deployer` on two ports, the same database and Redis) judge a canary on
their combined traffic, one of them restarted on the way, and make exactly one rollback decision."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from shared.db.models import Deployment, DeploymentHistory, DeploymentServer
from tests.conftest import ROOT, free_port, stop_process, wait_for
from tests.deployer.test_api import make_version

pytestmark = pytest.mark.slow

MIN_REQUESTS = 20


def model_server(status: int):
    """A model server that answers every scoring request with `status`."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        body = b'{"predictions": [1]}' if status == 200 else b'{"error_code": "INTERNAL_ERROR", "message": "boom"}'
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
        )
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, int]]:
    servers, ports = [], {}
    for role, status in (("stable", 200), ("canary", 500)):
        ports[role] = free_port()
        server = uvicorn.Server(
            uvicorn.Config(model_server(status), host="127.0.0.1", port=ports[role], log_level="error")
        )
        threading.Thread(target=server.run, daemon=True).start()
        servers.append(server)
    wait_for(lambda: all(server.started for server in servers), timeout=10, what="fake model servers")
    yield ports
    for server in servers:
        server.should_exit = True


def start_gateways(*ports: int) -> list[subprocess.Popen]:
    """Gateway processes on these ports, started side by side (start-up is the slow part)."""
    env = {**os.environ, "TESSERA_DEPLOYER_STATE_FLUSH_INTERVAL_S": "0.1"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tessera", "serve", "deployer", "--port", str(port)],
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        for port in ports
    ]
    for process, port in zip(processes, ports, strict=True):
        wait_until_ready(process, port)
    return processes


def wait_until_ready(process: subprocess.Popen, port: int) -> None:
    def ready() -> bool:
        assert process.poll() is None, "the gateway exited at start-up"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    wait_for(ready, timeout=60, what=f"gateway on {port}", every=0.2)


def test_two_gateway_processes_make_one_rollback_from_their_combined_traffic(db, live_tenant, upstreams):
    with db.session_scope() as session:
        stable, canary = make_version(session, live_tenant.project_id), make_version(session, live_tenant.project_id)
        deployment = Deployment(
            project_id=live_tenant.project_id,
            name="shared",
            target="local",
            status="healthy",
            model_version_id=stable.id,
            canary_version_id=canary.id,
            # All traffic to the canary, so each request below is one the judge counts.
            canary_percent=100,
            shadow_percent=0,
            config={"canary": {"max_error_rate": 0.1, "min_requests": MIN_REQUESTS, "max_requests": 500}},
        )
        session.add(deployment)
        session.flush()
        for role, version in (("stable", stable), ("canary", canary)):
            session.add(
                DeploymentServer(
                    deployment_id=deployment.id,
                    role=role,
                    model_version_id=version.id,
                    model_uri="/m",
                    pid=1,
                    port=upstreams[role],
                )
            )
        deployment_id = deployment.id
    ports = [free_port(), free_port()]
    first, second = start_gateways(*ports)
    try:

        def invoke(port: int) -> str:
            response = httpx.post(
                f"http://127.0.0.1:{port}/deployments/{deployment_id}/invocations",
                json={"inputs": [[1.0]]},
                headers=live_tenant.headers,
                timeout=10,
            )
            return response.headers["x-tessera-route"]

        # The first gateway serves 12 canary requests (too few to judge) and is restarted: what it counted stays.
        assert [invoke(ports[0]) for _ in range(12)] == ["canary"] * 12
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
        (first,) = start_gateways(ports[0])
        assert invoke(ports[0]) == "canary"  # 13; it now watches the canary too, idle from here on

        # The second gateway alone would need 20 canary requests; it is cut off after 7 or a few more.
        routes = []
        while not routes or routes[-1] == "canary":
            routes.append(invoke(ports[1]))
            time.sleep(0.05)
            assert len(routes) < MIN_REQUESTS, "the second gateway judged on its own traffic only"
        # The restarted one stopped routing to it too (its own verdict, or the database's within the table TTL).
        wait_for(lambda: invoke(ports[0]) == "stable", timeout=5, what="the first gateway to drop the canary")

        with db.session_scope() as session:
            current = session.get(Deployment, deployment_id)
            rollbacks = session.scalars(
                select(DeploymentHistory).where(
                    DeploymentHistory.deployment_id == deployment_id, DeploymentHistory.action == "auto_rollback"
                )
            ).all()
            assert current.canary_version_id is None and current.status == "rolled_back"
            assert len(rollbacks) == 1, [row.reason for row in rollbacks]
            assert rollbacks[0].details["canary"]["request_count"] >= MIN_REQUESTS
    finally:
        for gateway in (first, second):
            stop_process(gateway)
