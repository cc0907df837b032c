"""The serving gateway: one route per deployment in front of its model servers.

Per request it picks stable or canary (traffic.py), forwards over one shared keep-alive client (upstream.py),
mirrors to the shadow in the background, counts and times the answer per version, feeds the canary's sliding
window and rolls a failing canary back, and queues the request and prediction for the deployment's linked monitor.

Nothing on that path touches the database: routing tables and authorization verdicts are cached in memory
for a few seconds (database work runs in a thread when they expire). An auto-rollback takes effect in this
process at once and is written to the database (history row, outbox event) in the background.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from services.deployer.domain import deployments
from services.deployer.domain.canary import (
    CanaryThresholds,
    ShadowDiffSnapshot,
    ShadowDiffStats,
    SlidingWindowStats,
    TrafficSnapshot,
    TrafficTally,
    judge_canary,
)
from services.deployer.domain.prediction_log import PredictionLogger
from services.deployer.domain.traffic import TrafficPolicy, TrafficSplitter
from services.deployer.domain.upstream import UpstreamClient, UpstreamError
from shared.core.auth import Access, Authenticator
from shared.core.context import current_request
from shared.core.errors import NotFound, TesseraError
from shared.core.metrics import REGISTRY
from shared.core.served_predictions import has_linked_monitor
from shared.db.models import Deployment, DeploymentServer, ModelVersion

log = structlog.get_logger("tessera.gateway")

REQUESTS = Counter(
    "tessera_deployment_requests_total",
    "Requests served through the gateway, per deployment, version and role",
    ["deployment", "version", "role", "outcome"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "tessera_deployment_request_duration_seconds",
    "Model-server latency seen by the gateway, per deployment, version and role",
    ["deployment", "version", "role"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SHADOW_COMPARISONS = Counter(
    "tessera_deployment_shadow_comparisons_total",
    "Shadow answers compared with the stable answer (match, differ, error, dropped)",
    ["deployment", "version", "result"],
    registry=REGISTRY,
)
AUTO_ROLLBACKS = Counter(
    "tessera_deployment_auto_rollbacks_total", "Canaries rolled back by the gateway", ["deployment"], registry=REGISTRY
)

SessionScope = Callable[[], AbstractContextManager[Session]]
# Shadow requests in flight per process; beyond it mirroring is skipped rather than queued (it must never
# build up memory or compete with live traffic).
MAX_SHADOW_IN_FLIGHT = 32
_FORWARDED_HEADERS = ("content-type",)


class Unavailable(TesseraError):
    code = "TEMPORARILY_UNAVAILABLE"


@dataclass(frozen=True)
class Upstream:
    role: str
    version_id: uuid.UUID
    version: str
    url: str
    requests_ok: Any = field(compare=False, repr=False)
    requests_failed: Any = field(compare=False, repr=False)
    latency: Any = field(compare=False, repr=False)

    @classmethod
    def build(cls, deployment_id: uuid.UUID, role: str, version_id: uuid.UUID, version: str, url: str) -> Upstream:
        # Metric children resolved once per table load, not per request.
        labels = (str(deployment_id), version, role)
        return cls(
            role,
            version_id,
            version,
            url,
            REQUESTS.labels(*labels, "ok"),
            REQUESTS.labels(*labels, "error"),
            LATENCY.labels(*labels),
        )


@dataclass
class RouteTable:
    deployment_id: uuid.UUID
    project_id: uuid.UUID
    stable: Upstream | None
    canary: Upstream | None
    shadow: Upstream | None
    splitter: TrafficSplitter
    thresholds: CanaryThresholds
    window: tuple[float | None, int | None]
    # A monitor is linked: served predictions are queued for it.
    monitored: bool
    expires_at: float


@dataclass(frozen=True)
class GatewayResponse:
    status_code: int
    content: bytes
    media_type: str
    headers: dict[str, str]


def load_route_table(session: Session, deployment_id: uuid.UUID, ttl_s: float) -> RouteTable | None:
    """The deployment and its running servers in one query; None if it does not exist."""
    rows = session.execute(
        select(Deployment, DeploymentServer, ModelVersion.version, has_linked_monitor())
        .outerjoin(
            DeploymentServer,
            and_(DeploymentServer.deployment_id == Deployment.id, DeploymentServer.state == "running"),
        )
        .outerjoin(ModelVersion, ModelVersion.id == DeploymentServer.model_version_id)
        .where(Deployment.id == deployment_id, Deployment.deleted_at.is_(None))
    ).all()
    if not rows:
        return None
    deployment = rows[0][0]
    upstreams = {
        server.role: Upstream.build(
            deployment.id, server.role, server.model_version_id, str(version), f"http://{server.host}:{server.port}"
        )
        for _, server, version, _ in rows
        if server is not None and deployment.status != "stopped"
    }
    canary, shadow = upstreams.get("canary"), upstreams.get("shadow")
    policy = TrafficPolicy(
        canary_percent=deployment.canary_percent if canary else 0,
        shadow_percent=deployment.shadow_percent if shadow else 0,
    )
    return RouteTable(
        deployment_id=deployment.id,
        project_id=deployment.project_id,
        stable=upstreams.get("stable"),
        canary=canary,
        shadow=shadow,
        splitter=TrafficSplitter(policy),
        thresholds=deployments.canary_thresholds(deployment),
        window=deployments.canary_window(deployment),
        monitored=bool(rows[0][3]),
        expires_at=time.monotonic() + ttl_s,
    )


@dataclass
class _CanaryWatch:
    version_id: uuid.UUID
    window: SlidingWindowStats


class Gateway:
    def __init__(
        self,
        *,
        session_scope: SessionScope,
        authenticator: Authenticator,
        client: UpstreamClient,
        prediction_log: PredictionLogger | None,
        route_ttl_s: float = 2.0,
        auth_ttl_s: float = 10.0,
    ) -> None:
        self.session_scope = session_scope
        self.authenticator = authenticator
        self.client = client
        self.prediction_log = prediction_log
        self.route_ttl_s = route_ttl_s
        self.auth_ttl_s = auth_ttl_s
        self._routes: dict[uuid.UUID, RouteTable] = {}
        self._loading: dict[uuid.UUID, asyncio.Task[RouteTable | None]] = {}
        # (credential digest, project) -> expiry: a revoked key keeps working for at most auth_ttl_s.
        self._authorized: dict[tuple[str, uuid.UUID], float] = {}
        self._canaries: dict[uuid.UUID, _CanaryWatch] = {}
        # Canaries this process has rolled back: kept out of reloaded tables until the database agrees.
        self._rolled_back: set[tuple[uuid.UUID, uuid.UUID]] = set()
        self._shadow_stats: dict[tuple[uuid.UUID, uuid.UUID], ShadowDiffStats] = {}
        self._shadow_in_flight = 0
        # (deployment, role, version) -> what this process served, for the console's traffic split.
        self._traffic: dict[tuple[uuid.UUID, str, uuid.UUID], tuple[str, TrafficTally]] = {}
        self._background: set[asyncio.Task[Any]] = set()

    # --- the request path ------------------------------------------------------------------------

    async def forward(
        self,
        deployment_id: uuid.UUID,
        path: str,
        body: bytes | None,
        content_type: str | None,
        authorization: str | None,
    ) -> GatewayResponse:
        """Serve one request: `path` is the model server's path (`/invocations`, `/v2/models/m/infer`)."""
        table = await self.authorize_deployment(deployment_id, authorization)
        upstream = (
            table.canary if table.canary is not None and table.splitter.choose_target() == "canary" else table.stable
        )
        if upstream is None:
            raise Unavailable(f"Deployment '{deployment_id}' has no running model server")
        headers = {"content-type": content_type} if content_type else None
        started = time.perf_counter()
        try:
            response = await self.client.request("GET" if body is None else "POST", upstream.url + path, body, headers)
        except UpstreamError as exc:
            self._observe(table, upstream, time.perf_counter() - started, error=True)
            raise Unavailable(f"Model server of version {upstream.version} did not answer: {exc}") from exc
        elapsed = time.perf_counter() - started
        self._observe(table, upstream, elapsed, error=response.status_code >= 500)
        if body is not None:
            if table.shadow is not None and response.status_code == 200 and table.splitter.should_mirror():
                self._mirror(table, table.shadow, path, body, headers, response.content)
            if self.prediction_log is not None and table.monitored:
                context = current_request()
                self.prediction_log.add(
                    {
                        # The caller's X-Request-ID (or the one the platform made): ground truth joins on it.
                        "request_id": context.request_id if context is not None else None,
                        "deployment_id": str(deployment_id),
                        "model_version_id": str(upstream.version_id),
                        "version": upstream.version,
                        "role": upstream.role,
                        "path": path,
                        "status_code": response.status_code,
                        "latency_ms": elapsed * 1000.0,
                        "timestamp": time.time(),
                        "request": body,
                        "response": response.content,
                    }
                )
        return GatewayResponse(
            response.status_code,
            response.content,
            response.content_type or "application/json",
            {"x-tessera-model-version": upstream.version, "x-tessera-route": upstream.role},
        )

    async def authorize_deployment(self, deployment_id: uuid.UUID, authorization: str | None) -> RouteTable:
        """The deployment's routing table, once the caller may read it (404 for anyone who cannot see it)."""
        table = await self._route_table(deployment_id)
        await self._authorize(authorization, table.project_id)
        return table

    def _observe(self, table: RouteTable, upstream: Upstream, elapsed_s: float, *, error: bool) -> None:
        (upstream.requests_failed if error else upstream.requests_ok).inc()
        upstream.latency.observe(elapsed_s)
        self._tally(table.deployment_id, upstream).record(elapsed_s * 1000.0, error=error)
        if upstream.role != "canary":
            return
        watch = self._canaries.get(table.deployment_id)
        if watch is None or watch.version_id != upstream.version_id:
            seconds, count = table.window
            watch = _CanaryWatch(upstream.version_id, SlidingWindowStats(window_seconds=seconds, max_requests=count))
            self._canaries[table.deployment_id] = watch
        watch.window.record(elapsed_s * 1000.0, error=error)
        verdict = judge_canary(watch.window.snapshot(), table.thresholds)
        if verdict.should_roll_back:
            self._roll_back_canary(table, upstream, "; ".join(verdict.reasons))

    def _roll_back_canary(self, table: RouteTable, canary: Upstream, reason: str) -> None:
        # Effective now for this process; the database transition follows in a thread.
        table.canary = None
        table.splitter = TrafficSplitter(TrafficPolicy(0, table.splitter.policy.shadow_percent))
        self._rolled_back.add((table.deployment_id, canary.version_id))
        self._canaries.pop(table.deployment_id, None)
        AUTO_ROLLBACKS.labels(str(table.deployment_id)).inc()
        log.warning("gateway.canary_rolled_back", deployment_id=str(table.deployment_id), reason=reason)
        self._spawn(asyncio.to_thread(self._record_rollback, table.deployment_id, canary.version_id, reason))

    def _record_rollback(self, deployment_id: uuid.UUID, canary_version_id: uuid.UUID, reason: str) -> None:
        with self.session_scope() as session:
            deployments.auto_rollback(session, deployment_id, canary_version_id, f"automatic: {reason}")

    # --- shadow ----------------------------------------------------------------------------------

    def _mirror(
        self,
        table: RouteTable,
        shadow: Upstream,
        path: str,
        body: bytes,
        headers: dict[str, str] | None,
        stable_answer: bytes,
    ) -> None:
        deployment = str(table.deployment_id)
        if self._shadow_in_flight >= MAX_SHADOW_IN_FLIGHT:
            SHADOW_COMPARISONS.labels(deployment, shadow.version, "dropped").inc()
            return
        stats = self._shadow_stats.setdefault((table.deployment_id, shadow.version_id), ShadowDiffStats())
        self._shadow_in_flight += 1
        self._spawn(self._compare_shadow(deployment, shadow, path, body, headers, stable_answer, stats))

    async def _compare_shadow(
        self,
        deployment: str,
        shadow: Upstream,
        path: str,
        body: bytes,
        headers: dict[str, str] | None,
        stable_answer: bytes,
        stats: ShadowDiffStats,
    ) -> None:
        tally = self._tally(uuid.UUID(deployment), shadow)
        started = time.perf_counter()
        try:
            response = await self.client.request("POST", shadow.url + path, body, headers)
            tally.record((time.perf_counter() - started) * 1000.0, error=response.status_code >= 500)
            if response.status_code != 200:
                SHADOW_COMPARISONS.labels(deployment, shadow.version, "error").inc()
                return
            stable, mirrored = _predictions(orjson.loads(stable_answer)), _predictions(orjson.loads(response.content))
            before = stats.snapshot().exact_match_count
            stats.record(stable, mirrored)
            result = "match" if stats.snapshot().exact_match_count > before else "differ"
            SHADOW_COMPARISONS.labels(deployment, shadow.version, result).inc()
        except UpstreamError:
            tally.record((time.perf_counter() - started) * 1000.0, error=True)
            SHADOW_COMPARISONS.labels(deployment, shadow.version, "error").inc()
        except orjson.JSONDecodeError:
            SHADOW_COMPARISONS.labels(deployment, shadow.version, "error").inc()
        finally:
            self._shadow_in_flight -= 1

    def shadow_stats(self, deployment_id: uuid.UUID) -> dict[uuid.UUID, ShadowDiffSnapshot]:
        """This process's shadow comparisons of a deployment, per shadow version id."""
        return {
            version_id: stats.snapshot()
            for (deployment, version_id), stats in self._shadow_stats.items()
            if deployment == deployment_id
        }

    def _tally(self, deployment_id: uuid.UUID, upstream: Upstream) -> TrafficTally:
        key = (deployment_id, upstream.role, upstream.version_id)
        entry = self._traffic.get(key)
        if entry is None:
            entry = self._traffic[key] = (upstream.version, TrafficTally())
        return entry[1]

    def traffic(self, deployment_id: uuid.UUID) -> list[tuple[str, uuid.UUID, str, TrafficSnapshot]]:
        """(role, version id, version, counts) of everything this process has served for a deployment."""
        return [
            (role, version_id, version, tally.snapshot())
            for (deployment, role, version_id), (version, tally) in self._traffic.items()
            if deployment == deployment_id
        ]

    # --- caches ----------------------------------------------------------------------------------

    async def _route_table(self, deployment_id: uuid.UUID) -> RouteTable:
        table = self._routes.get(deployment_id)
        if table is None or table.expires_at <= time.monotonic():
            # One load per deployment however many requests arrive while it runs.
            loading = self._loading.get(deployment_id)
            if loading is None:
                loading = asyncio.ensure_future(asyncio.to_thread(self._load, deployment_id))
                self._loading[deployment_id] = loading
                loading.add_done_callback(lambda _: self._loading.pop(deployment_id, None))
            table = await asyncio.shield(loading)
        if table is None:
            raise NotFound(f"Deployment '{deployment_id}' does not exist")
        return table

    def _load(self, deployment_id: uuid.UUID) -> RouteTable | None:
        with self.session_scope() as session:
            table = load_route_table(session, deployment_id, self.route_ttl_s)
        if table is None:
            self._routes.pop(deployment_id, None)
            return None
        if table.canary is not None and (deployment_id, table.canary.version_id) in self._rolled_back:
            table.canary = None
            table.splitter = TrafficSplitter(TrafficPolicy(0, table.splitter.policy.shadow_percent))
        self._routes[deployment_id] = table
        return table

    def invalidate(self, deployment_id: uuid.UUID) -> None:
        """Forget a cached table, so a change made through this process's API applies at once."""
        self._routes.pop(deployment_id, None)

    async def _authorize(self, authorization: str | None, project_id: uuid.UUID) -> None:
        digest = hashlib.sha256((authorization or "").encode()).hexdigest()
        key = (digest, project_id)
        if self._authorized.get(key, 0.0) > time.monotonic():
            return
        await asyncio.to_thread(self._check_access, authorization, project_id)
        self._authorized[key] = time.monotonic() + self.auth_ttl_s

    def _check_access(self, authorization: str | None, project_id: uuid.UUID) -> None:
        with self.session_scope() as session:
            principal = self.authenticator.authenticate(session, authorization)
            Access(session, principal).require_project(project_id, deployments.READ)

    # --- lifecycle -------------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Let background work (rollbacks, shadow calls) finish, then flush the prediction log."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self.prediction_log is not None:
            await self.prediction_log.aclose()


def _predictions(answer: Any) -> Any:
    """The predictions of an MLflow (`predictions`) or V2 (`outputs[].data`) answer."""
    if isinstance(answer, dict):
        if "predictions" in answer:
            return answer["predictions"]
        if "outputs" in answer:
            return [output.get("data") for output in answer["outputs"]]
    return answer
