"""The gateway's own logic on the test database, with model servers replaced by an in-process upstream
client (the one edge here): caching (no database per request), canary auto-rollback judged against the
stable version on the shared rollout state, and the prediction log."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import uuid

import orjson
import pytest
from sqlalchemy import select

from services.deployer.domain.gateway import Gateway
from services.deployer.domain.prediction_log import PredictionLogger
from services.deployer.domain.rollout_state import RedisCounterStore
from services.deployer.domain.traffic import sticky_point
from services.deployer.domain.upstream import UpstreamAnswer, UpstreamError
from shared.core.auth import Authenticator
from shared.core.served_predictions import batch_rows, served_request, served_rows
from shared.db.models import Deployment, DeploymentHistory, DeploymentServer, ModelMonitoring, OutboxEvent
from tests.conftest import REDIS_URL
from tests.deployer.test_api import make_version

STABLE_PORT, CANARY_PORT = 40001, 40002


@pytest.fixture
def deployment(db_session, tenant) -> Deployment:
    stable = make_version(db_session, tenant.project_id)
    canary = make_version(db_session, tenant.project_id)
    deployment = Deployment(
        project_id=tenant.project_id,
        name="gw",
        target="local",
        status="healthy",
        model_version_id=stable.id,
        canary_version_id=canary.id,
        canary_percent=50,
        shadow_percent=0,
        config={"canary": {"max_error_rate": 0.1, "min_requests": 10, "max_requests": 50}},
    )
    db_session.add(deployment)
    db_session.flush()
    db_session.add(ModelMonitoring(project_id=tenant.project_id, name="gw-monitor", deployment_id=deployment.id))
    for role, version, port in (("stable", stable, STABLE_PORT), ("canary", canary, CANARY_PORT)):
        db_session.add(
            DeploymentServer(
                deployment_id=deployment.id, role=role, model_version_id=version.id, model_uri="/m", pid=1, port=port
            )
        )
    db_session.flush()
    return deployment


MODEL_FAILED = UpstreamAnswer(500, b'{"error_code":"INTERNAL_ERROR","message":"boom"}', "application/json")
BAD_INPUT = UpstreamAnswer(400, b'{"error_code":"INVALID_PARAMETER_VALUE","message":"null"}', "application/json")
PREDICTED = UpstreamAnswer(200, b'{"predictions":[1]}', "application/json")


class ModelServers:
    """Answers as the stable and canary servers would; the canary's model raises on every request."""

    async def request(self, method, url, body=None, headers=None) -> UpstreamAnswer:
        return MODEL_FAILED if f":{CANARY_PORT}/" in url else PREDICTED


class TwoGoodVersions:
    """Both versions serve, and fail alike on the traffic clients send: of every 8 requests a version gets,
    one breaks its model (5xx) and one is refused as bad input (4xx)."""

    def __init__(self) -> None:
        self.served: collections.Counter[str] = collections.Counter()

    async def request(self, method, url, body=None, headers=None) -> UpstreamAnswer:
        server = url.split("/")[2]
        self.served[server] += 1
        return {0: MODEL_FAILED, 1: BAD_INPUT}.get(self.served[server] % 8, PREDICTED)


def redis_store() -> RedisCounterStore:
    """The shared rollout state in Redis, as gateways share it in production, under a key prefix of its own.
    (The database store is tested in test_rollout_state: here the test's single transactional connection
    could not take the flush and the rollback from two threads at once.)"""
    return RedisCounterStore(REDIS_URL, f"tessera-test-{uuid.uuid4().hex}:")


def build(db_session, settings, sink_batches: list | None = None, client=None, store=None) -> tuple[Gateway, list[int]]:
    opened: list[int] = []
    tx_db = db_session.info["tx_db"]

    @contextlib.contextmanager
    def counting_scope():
        opened.append(1)
        with tx_db.session_scope() as session:
            yield session

    async def sink(batch):
        sink_batches.append(batch)

    gateway = Gateway(
        session_scope=counting_scope,
        authenticator=Authenticator(settings.jwt_secret),
        client=client or ModelServers(),
        prediction_log=PredictionLogger(sink, max_batch=25, flush_interval_s=60) if sink_batches is not None else None,
        # The tests flush the shared state themselves (`gateway.flush()`), where they want a judgement.
        stats_store=store or redis_store(),
        stats_flush_interval_s=3600,
        route_ttl_s=60,
    )
    return gateway, opened


async def serve_in_batches(gateway: Gateway, deployment_id, authorization, bodies: list[bytes]) -> list[str]:
    """Serve the bodies, flushing the shared state after every 10 requests; the route of each answer."""
    routes = []
    for index, body in enumerate(bodies):
        answer = await gateway.forward(deployment_id, "/invocations", body, "application/json", authorization)
        routes.append(answer.headers["x-tessera-route"])
        if index % 10 == 9:
            await gateway.flush()
    await gateway.aclose()
    return routes


def test_a_failing_canary_is_cut_off_and_rolled_back_without_a_query_per_request(
    db_session, settings, tenant, deployment
):
    gateway, opened = build(db_session, settings)

    routes = asyncio.run(serve_in_batches(gateway, deployment.id, f"Bearer {tenant.api_key}", [b"{}"] * 200))

    # Judged at the first flush after the canary's 10th request (> 10 % errors); none reaches it afterwards.
    judged_at = next(end for end in range(10, 201, 10) if routes[:end].count("canary") >= 10)
    assert "canary" not in routes[judged_at:] and routes.count("canary") < 20
    # One routing-table load and one authorization check, then the auto-rollback's transaction.
    assert len(opened) == 3
    db_session.expire_all()
    assert (deployment.canary_version_id, deployment.status) == (None, "rolled_back")
    history = db_session.scalar(select(DeploymentHistory).where(DeploymentHistory.deployment_id == deployment.id))
    assert (history.action, history.outcome) == ("auto_rollback", "succeeded")
    assert "error rate 100.0%" in history.reason and "against 0.0% for the stable version" in history.reason
    # The figures the decision was made on.
    assert history.details["canary"]["error_count"] == history.details["canary"]["request_count"] >= 10
    assert history.details["stable"]["error_count"] == 0
    events = db_session.scalars(select(OutboxEvent.event_type)).all()
    assert "deployment.rolled_back" in events and "deployment.server_retired" in events


def test_a_canary_survives_traffic_that_is_bad_for_both_versions(db_session, settings, tenant, deployment):
    # 1 request in 8 breaks either model, 1 in 8 is refused as bad input: as bad for the stable as the canary.
    gateway, _ = build(db_session, settings, client=TwoGoodVersions())

    routes = asyncio.run(serve_in_batches(gateway, deployment.id, f"Bearer {tenant.api_key}", [b"{}"] * 400))

    assert routes[-100:].count("canary") > 20  # still serving its share
    db_session.expire_all()
    assert deployment.canary_version_id is not None and deployment.status == "healthy"
    assert db_session.scalar(select(DeploymentHistory).where(DeploymentHistory.deployment_id == deployment.id)) is None


def test_two_gateways_make_one_rollback_decision_from_their_combined_traffic(db_session, settings, tenant, deployment):
    # All traffic to the failing canary; 10 requests are needed to judge, and each gateway sees only 6.
    deployment.canary_percent = 100
    db_session.flush()
    store = redis_store()
    (first, _), (second, _) = build(db_session, settings, store=store), build(db_session, settings, store=store)
    authorization = f"Bearer {tenant.api_key}"

    async def serve() -> None:
        for gateway in (first, second):
            for _ in range(6):
                await gateway.forward(deployment.id, "/invocations", b"{}", "application/json", authorization)
            await gateway.flush()
        await first.flush()  # the first sees the breach too, from the combined counts, and claims it too late
        for gateway in (first, second):
            await gateway.aclose()

    asyncio.run(serve())

    db_session.expire_all()
    assert deployment.canary_version_id is None
    rollbacks = db_session.scalars(
        select(DeploymentHistory).where(
            DeploymentHistory.deployment_id == deployment.id, DeploymentHistory.action == "auto_rollback"
        )
    ).all()
    assert len(rollbacks) == 1 and rollbacks[0].details["canary"]["request_count"] == 12
    assert first._routes[deployment.id].canary is None and second._routes[deployment.id].canary is None


def test_served_requests_reach_the_prediction_log_in_batches(db_session, settings, tenant, deployment):
    deployment.canary_version_id, deployment.canary_percent = None, 0
    db_session.flush()
    batches: list[list[dict]] = []
    gateway, _ = build(db_session, settings, batches)

    async def serve() -> None:
        for _ in range(60):
            await gateway.forward(deployment.id, "/invocations", b'{"inputs": [1]}', None, f"Bearer {tenant.api_key}")
        await asyncio.sleep(0)  # the flusher runs once the event loop is free
        await gateway.aclose()

    asyncio.run(serve())

    assert [len(batch) for batch in batches] == [25, 25, 10]  # two full batches, the rest on close
    record = batches[0][0]
    assert (record["deployment_id"], record["role"], record["request"], record["response"]) == (
        str(deployment.id),
        "stable",
        b'{"inputs": [1]}',
        b'{"predictions":[1]}',
    )


def test_served_requests_of_a_deployment_without_a_monitor_are_not_logged(db_session, settings, tenant, deployment):
    deployment.canary_version_id, deployment.canary_percent = None, 0
    db_session.execute(ModelMonitoring.__table__.update().values(deployment_id=None))
    batches: list[list[dict]] = []
    gateway, _ = build(db_session, settings, batches)

    async def serve() -> None:
        await gateway.forward(deployment.id, "/invocations", b'{"inputs": [1]}', None, f"Bearer {tenant.api_key}")
        await gateway.aclose()

    asyncio.run(serve())

    assert batches == []


def test_a_batch_the_sink_refuses_is_kept_and_sent_at_the_next_flush():
    sent: list[int] = []

    async def flaky(batch):
        if not sent:
            sent.append(0)
            raise UpstreamError("monitor down")
        sent.append(len(batch))

    async def run() -> None:
        log = PredictionLogger(flaky, max_batch=5, flush_interval_s=60)
        for index in range(12):
            log.add({"n": index})
            await asyncio.sleep(0)
        await log.aclose()

    asyncio.run(run())

    assert sent[0] == 0 and sum(sent[1:]) == 12


def test_unknown_deployments_are_not_found(db_session, settings, tenant):
    gateway, _ = build(db_session, settings)
    with pytest.raises(Exception, match="does not exist"):
        asyncio.run(gateway.forward(uuid.uuid4(), "/invocations", b"{}", None, f"Bearer {tenant.api_key}"))


@pytest.mark.parametrize(
    "request_body",
    [
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}},
        {"dataframe_records": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]},
        {"inputs": {"a": [1, 3], "b": [2, 4]}},
        {
            "inputs": [
                {"name": "a", "shape": [2], "datatype": "INT64", "data": [1, 3]},
                {"name": "b", "shape": [2], "datatype": "INT64", "data": [2, 4]},
            ]
        },
    ],
    ids=["dataframe_split", "dataframe_records", "inputs", "v2"],
)
def test_monitor_rows_pair_each_input_row_with_its_prediction(request_body):
    record = {
        "status_code": 200,
        "timestamp": 1_700_000_000.0,
        "request": orjson.dumps(request_body),
        "response": b'{"predictions": [0, 1]}',
    }

    rows = served_rows(record)

    assert [(row["features"], row["prediction"]) for row in rows] == [({"a": 1, "b": 2}, 0), ({"a": 3, "b": 4}, 1)]
    assert rows[0]["timestamp"] == "2023-11-14T22:13:20+00:00"
    assert served_rows(record | {"status_code": 500}) == []
    # Ground truth joins on the request id: one per row, the request's own for a single row.
    assert [row["request_id"] for row in served_rows(record | {"request_id": "r1"})] == ["r1:0", "r1:1"]
    single = record | {"request_id": "r1", "response": b'{"predictions": [0]}'}
    single["request"] = orjson.dumps({"dataframe_records": [{"a": 1, "b": 2}]})
    assert [row["request_id"] for row in served_rows(single)] == ["r1"]
    # Queued as served (the bodies as they came), paired by the monitor's ingest: the same rows.
    assert batch_rows([served_request(record | {"request_id": "r1"})]) == served_rows(record | {"request_id": "r1"})
    assert served_request(record | {"status_code": 503}) is None


class CanaryBreaksAfter:
    """The stable always answers; the canary answers its first `good` requests, then its model raises."""

    def __init__(self, good: int) -> None:
        self.good = good
        self.canary_served = 0

    async def request(self, method, url, body=None, headers=None) -> UpstreamAnswer:
        if f":{CANARY_PORT}/" not in url:
            return PREDICTED
        self.canary_served += 1
        return PREDICTED if self.canary_served <= self.good else MODEL_FAILED


def history_of(db_session, deployment) -> list[DeploymentHistory]:
    db_session.expire_all()
    return list(
        db_session.scalars(
            select(DeploymentHistory)
            .where(DeploymentHistory.deployment_id == deployment.id)
            .order_by(DeploymentHistory.created_at)
        )
    )


def start_plan(db_session, deployment, steps: list[int]) -> None:
    deployment.canary_percent = steps[0]
    deployment.config = {**deployment.config, "plan": {"steps": steps, "step_seconds": 0, "step": 0}}
    db_session.flush()


@pytest.mark.parametrize(
    ("canary_good_for", "outcome"), [(10_000, "promoted"), (10, "rolled back at step 2")], ids=["good", "bad"]
)
def test_a_four_step_plan_promotes_a_good_version_and_rolls_back_a_bad_one(
    db_session, settings, tenant, deployment, canary_good_for, outcome
):
    start_plan(db_session, deployment, [5, 25, 50, 100])  # 10 canary requests per step (min_requests)
    canary_version, stable_version = deployment.canary_version_id, deployment.model_version_id
    gateway, _ = build(db_session, settings, client=CanaryBreaksAfter(canary_good_for))

    asyncio.run(serve_in_batches(gateway, deployment.id, f"Bearer {tenant.api_key}", [b"{}"] * 800))

    history = history_of(db_session, deployment)
    steps = [row for row in history if row.action == "canary_step"]
    if outcome == "promoted":
        assert [(row.details["percent"], row.details["step"]) for row in steps] == [(5, 1), (25, 2), (50, 3)]
        assert all(row.details["canary"]["request_count"] >= 10 for row in steps)
        promoted = history[-1]
        assert (promoted.action, promoted.details["step"], promoted.details["percent"]) == ("promote", 4, 100)
        assert "all 4 steps" in promoted.reason
        assert (deployment.model_version_id, deployment.canary_version_id) == (canary_version, None)
        assert "plan" not in deployment.config
    else:
        assert [row.details["percent"] for row in steps] == [5]
        rolled_back = history[-1]
        assert (rolled_back.action, rolled_back.details["step"], rolled_back.details["steps"]) == (
            "auto_rollback",
            2,
            [5, 25, 50, 100],
        )
        assert rolled_back.details["canary"]["error_count"] >= 10
        assert (deployment.model_version_id, deployment.canary_version_id) == (stable_version, None)
        assert deployment.status == "rolled_back" and "plan" not in deployment.config


def test_sticky_routing_keeps_each_user_on_one_version(db_session, settings, tenant, deployment):
    deployment.config = {**deployment.config, "canary": {**deployment.config["canary"], "sticky_header": "X-User-Id"}}
    db_session.flush()
    gateway, _ = build(db_session, settings, client=CanaryBreaksAfter(10**9))
    users = [f"user-{index}".encode() for index in range(200)]

    async def serve() -> dict[bytes, set[str]]:
        routes: dict[bytes, set[str]] = {user: set() for user in users}
        for _ in range(3):
            for user in users:
                answer = await gateway.forward(
                    deployment.id,
                    "/invocations",
                    b"{}",
                    "application/json",
                    f"Bearer {tenant.api_key}",
                    [(b"x-user-id", user)],
                )
                routes[user].add(answer.headers["x-tessera-route"])
        await gateway.aclose()
        return routes

    routes = asyncio.run(serve())

    assert all(len(seen) == 1 for seen in routes.values())  # each user saw one version, three times over
    assert {user for user, seen in routes.items() if seen == {"canary"}} == {
        user for user in users if sticky_point(user) < 50
    }
    assert 70 <= sum(seen == {"canary"} for seen in routes.values()) <= 130
