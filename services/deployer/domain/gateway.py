"""The serving gateway: one route per deployment in front of its model servers.

Per request it picks stable or canary (traffic.py), then one of that version's replicas (balancer.py; a replica
that does not answer is skipped and the request goes to another), forwards over one shared keep-alive client
(upstream.py) with the deployment's batching settings for the model server,
mirrors to the shadow in the background, counts and times the answer per version, and queues the request and
prediction for the deployment's linked monitor.

Nothing on that path touches the database or Redis: routing tables and authorization verdicts are cached in
memory for a few seconds, and counts are tallied in memory. Every `stats_flush_interval_s` a background flush
adds the tally (and shadow comparisons) to the shared rollout state (rollout_state.py) and judges each canary
against the stable version on the counts of every gateway process; a failing canary is cut off in this process
at once, and the rollback is written to the database (history row with the figures, outbox event) by whichever
process claims it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from services.deployer.domain import deployments, rollout_state
from services.deployer.domain.balancer import ReplicaBalancer
from services.deployer.domain.canary import (
    CanaryThresholds,
    CanaryVerdict,
    ShadowDiffSnapshot,
    ShadowDiffStats,
    TrafficSnapshot,
    TrafficTally,
    WindowSnapshot,
    judge_canary,
)
from services.deployer.domain.prediction_log import PredictionLogger
from services.deployer.domain.traffic import TrafficPolicy, TrafficSplitter
from services.deployer.domain.upstream import UpstreamAnswer, UpstreamClient, UpstreamError
from services.deployer.model_server import BATCHING_HEADER, batching_header_value
from shared.core.auth import Access, Authenticator
from shared.core.context import current_request
from shared.core.errors import NotFound, TesseraError
from shared.core.metrics import REGISTRY
from shared.core.served_predictions import has_linked_monitor
from shared.db.models import Deployment, DeploymentHistory, DeploymentServer, ModelVersion

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
    # One base URL per running replica, in replica order.
    urls: tuple[str, ...]
    requests_ok: Any = field(compare=False, repr=False)
    requests_failed: Any = field(compare=False, repr=False)
    latency: Any = field(compare=False, repr=False)
    # What every answer it serves says of it, as a dict and as raw ASGI headers.
    answer_headers: dict[str, str] = field(compare=False, repr=False, default_factory=dict)
    raw_answer_headers: tuple[tuple[bytes, bytes], ...] = field(compare=False, repr=False, default=())

    @classmethod
    def build(
        cls, deployment_id: uuid.UUID, role: str, version_id: uuid.UUID, version: str, urls: tuple[str, ...]
    ) -> Upstream:
        # Metric children resolved once per table load, not per request.
        labels = (str(deployment_id), version, role)
        headers = {"x-tessera-model-version": version, "x-tessera-route": role}
        return cls(
            role,
            version_id,
            version,
            urls,
            REQUESTS.labels(*labels, "ok"),
            REQUESTS.labels(*labels, "error"),
            LATENCY.labels(*labels),
            headers,
            tuple((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()),
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
    window: rollout_state.WindowSpec
    # A progressive rollout's plan ({"steps", "step_seconds", "step"}), or None for a fixed share.
    plan: dict[str, Any] | None
    # The request header (lower-case, as ASGI has it) whose value keeps a caller on one version.
    sticky_header: bytes | None
    # A monitor is linked: served predictions are queued for it.
    monitored: bool
    # The headers sent to the model servers beyond the request's content type (the batching settings).
    upstream_headers: dict[str, str]
    expires_at: float


@dataclass(frozen=True, slots=True)
class GatewayResponse:
    status_code: int
    content: bytes
    media_type: str
    headers: dict[str, str]
    raw_headers: tuple[tuple[bytes, bytes], ...] = ()


def load_route_table(session: Session, deployment_id: uuid.UUID, ttl_s: float) -> RouteTable | None:
    """The deployment and its running servers in one query; None if it does not exist."""
    rows = session.execute(
        select(Deployment, DeploymentServer, ModelVersion.version, has_linked_monitor())
        .outerjoin(
            DeploymentServer,
            and_(
                DeploymentServer.deployment_id == Deployment.id,
                DeploymentServer.state == "running",
                DeploymentServer.port.is_not(None),
            ),
        )
        .outerjoin(ModelVersion, ModelVersion.id == DeploymentServer.model_version_id)
        .where(Deployment.id == deployment_id, Deployment.deleted_at.is_(None))
        .order_by(DeploymentServer.replica)
    ).all()
    if not rows:
        return None
    deployment = rows[0][0]
    canary_started = next(
        (server.started_at for _, server, _, _ in rows if server is not None and server.role == "canary"), None
    )
    seconds, max_requests = deployments.canary_window(deployment)
    plan = deployment.config.get("plan")
    canary_settings = deployment.config.get("canary", {})
    # A plan's step is judged on its own traffic: its window starts with the step.
    window_start = max(
        canary_started.timestamp() if canary_started is not None else 0.0,
        (plan or {}).get("step_started_at", 0.0),
    )
    replicas: dict[str, list[tuple[DeploymentServer, int]]] = {}
    for _, server, version, _ in rows:
        if server is not None and deployment.status != "stopped":
            replicas.setdefault(server.role, []).append((server, version))
    upstreams = {
        role: Upstream.build(
            deployment.id,
            role,
            servers[0][0].model_version_id,
            str(servers[0][1]),
            tuple(f"http://{server.host}:{server.port}" for server, _ in servers),
        )
        for role, servers in replicas.items()
    }
    batching = deployments.batching(deployment)
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
        window=rollout_state.WindowSpec(seconds, max_requests, window_start or None, (plan or {}).get("step", 0)),
        plan=plan if canary is not None else None,
        sticky_header=sticky.lower().encode("latin-1") if (sticky := canary_settings.get("sticky_header")) else None,
        monitored=bool(rows[0][3]),
        upstream_headers={BATCHING_HEADER: batching_header_value(**batching)} if batching else {},
        expires_at=time.monotonic() + ttl_s,
    )


@dataclass(frozen=True)
class _Verdict:
    """A canary's judgement that calls for a change: a rollback, or (a plan's step passed) the next step."""

    table: RouteTable
    canary: Upstream
    verdict: CanaryVerdict
    canary_window: WindowSnapshot
    stable_window: WindowSnapshot | None

    def figures(self) -> dict[str, Any]:
        return {
            "canary": asdict(self.canary_window),
            "stable": asdict(self.stable_window) if self.stable_window is not None else None,
        }


class Gateway:
    def __init__(
        self,
        *,
        session_scope: SessionScope,
        authenticator: Authenticator,
        client: UpstreamClient,
        prediction_log: PredictionLogger | None,
        stats_store: rollout_state.CounterStore,
        stats_flush_interval_s: float = 0.25,
        route_ttl_s: float = 2.0,
        auth_ttl_s: float = 10.0,
    ) -> None:
        self.session_scope = session_scope
        self.authenticator = authenticator
        self.client = client
        self.balancer = ReplicaBalancer()
        self.prediction_log = prediction_log
        self.stats_store = stats_store
        self.stats_flush_interval_s = stats_flush_interval_s
        self.route_ttl_s = route_ttl_s
        self.auth_ttl_s = auth_ttl_s
        self._routes: dict[uuid.UUID, RouteTable] = {}
        self._loading: dict[uuid.UUID, asyncio.Task[RouteTable | None]] = {}
        # (credential digest, project) -> expiry: a revoked key keeps working for at most auth_ttl_s.
        self._authorized: dict[tuple[str, uuid.UUID], float] = {}
        self._pending = rollout_state.PendingCounts()
        self._flusher: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        # Canaries this process has rolled back: kept out of reloaded tables until the database agrees.
        self._rolled_back: set[tuple[uuid.UUID, uuid.UUID]] = set()
        # Shadow comparisons since the last flush.
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
        request_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> GatewayResponse:
        """Serve one request: `path` is the model server's path (`/invocations`, `/v2/models/m/infer`);
        `request_headers` (raw ASGI) are read only for a deployment with sticky routing."""
        table = await self.authorize_deployment(deployment_id, authorization)
        upstream = table.stable
        if table.canary is not None:
            sticky_key = None
            if table.sticky_header is not None and request_headers:
                sticky_key = next((value for name, value in request_headers if name == table.sticky_header), None)
            if table.splitter.choose_target(sticky_key) == "canary":
                upstream = table.canary
        if upstream is None:
            raise Unavailable(f"Deployment '{deployment_id}' has no running model server")
        headers = {"content-type": content_type, **table.upstream_headers} if content_type else table.upstream_headers
        started = time.perf_counter()
        try:
            response = await self._call(upstream, "GET" if body is None else "POST", path, body, headers)
        except UpstreamError as exc:
            self._observe(table, upstream, time.perf_counter() - started, "error")
            raise Unavailable(f"Model server of version {upstream.version} did not answer: {exc}") from exc
        elapsed = time.perf_counter() - started
        status = response.status_code
        # A 4xx is the request's fault (the model server refused the input): it counts against no version.
        self._observe(table, upstream, elapsed, "error" if status >= 500 else "rejected" if status >= 400 else "ok")
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
            upstream.answer_headers,
            upstream.raw_answer_headers,
        )

    async def _call(
        self, upstream: Upstream, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> UpstreamAnswer:
        """One replica's answer. A replica that does not answer is skipped for a while, and the request goes
        once to another (a model's prediction is a pure function of its input, so repeating it is safe)."""
        urls = upstream.urls
        if len(urls) == 1:
            return await self.client.request(method, urls[0] + path, body, headers)
        url = self.balancer.pick(urls) or urls[0]
        retried = False
        while True:
            self.balancer.started(url)
            try:
                return await self.client.request(method, url + path, body, headers)
            except UpstreamError as exc:
                self.balancer.mark_down(url)
                other = None if retried or not exc.retryable else self.balancer.pick(urls, exclude=url)
                if other is None:
                    raise
                log.warning("gateway.replica_unavailable", url=url, retried_on=other, error=str(exc))
            finally:
                self.balancer.finished(url)
            url, retried = other, True

    async def authorize_deployment(self, deployment_id: uuid.UUID, authorization: str | None) -> RouteTable:
        """The deployment's routing table, once the caller may read it (404 for anyone who cannot see it)."""
        # Both cached for a few seconds: checked here first, so the usual request awaits nothing.
        now = time.monotonic()
        table = self._routes.get(deployment_id)
        if table is None or table.expires_at <= now:
            table = await self._route_table(deployment_id)
        key = (hashlib.sha256((authorization or "").encode()).hexdigest(), table.project_id)
        if self._authorized.get(key, 0.0) <= now:
            await self._authorize(authorization, table.project_id)
        return table

    def _observe(self, table: RouteTable, upstream: Upstream, elapsed_s: float, outcome: rollout_state.Outcome) -> None:
        (upstream.requests_failed if outcome == "error" else upstream.requests_ok).inc()
        upstream.latency.observe(elapsed_s)
        self._tally(table.deployment_id, upstream).record(elapsed_s * 1000.0, error=outcome == "error")
        if table.canary is None and upstream.role != "canary":
            return  # the shared counts only ever judge a canary: a deployment without one costs no flushes
        self._pending.record(table.deployment_id, upstream.version_id, elapsed_s * 1000.0, outcome, table.window.phase)
        self._start_flushing()

    # --- the shared rollout state ----------------------------------------------------------------

    def _start_flushing(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush_periodically())

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.stats_flush_interval_s)
            try:
                await self.flush()
            except Exception as exc:  # the store is down: serving goes on, judging resumes with it
                log.warning("gateway.rollout_state_unavailable", error=f"{type(exc).__name__}: {exc}")

    async def flush(self) -> None:
        """Add this process's tally to the shared state, then judge every canary it routes to on the counts
        of all gateway processes; roll back those that do worse than their stable version."""
        async with self._flush_lock:
            traffic = self._pending.drain()
            shadows, self._shadow_stats = self._shadow_stats, {}
            judged = [table for table in self._routes.values() if table.canary is not None]
            if not (traffic or shadows or judged):
                return
            verdicts = await asyncio.to_thread(self._share_and_judge, traffic, shadows, judged)
            for verdict in verdicts:
                if verdict.verdict.should_roll_back:
                    await self._roll_back_canary(verdict)
                else:
                    await self._advance_canary(verdict)

    def _share_and_judge(
        self,
        traffic: rollout_state.Counters,
        shadows: dict[tuple[uuid.UUID, uuid.UUID], ShadowDiffStats],
        judged: list[RouteTable],
    ) -> list[_Verdict]:
        increments: dict[str, dict[str, float]] = dict(traffic)
        ttl = dict.fromkeys(traffic, rollout_state.TRAFFIC_TTL_S)
        maxima: dict[str, dict[str, float]] = {}
        for (deployment_id, version_id), stats in shadows.items():
            key = rollout_state.shadow_key(deployment_id, version_id)
            increments[key], maxima[key] = rollout_state.shadow_increments(stats.snapshot(), stats.abs_diff_sum)
            ttl[key] = rollout_state.SHADOW_TTL_S
        if increments:
            self.stats_store.add(increments, maxima, ttl)
        verdicts = []
        now = time.time()
        for table in judged:
            canary = table.canary
            if canary is None:
                continue
            stable_id = table.stable.version_id if table.stable is not None else None
            canary_window, stable_window = rollout_state.read_windows(
                self.stats_store, table.deployment_id, canary.version_id, stable_id, table.window, now
            )
            verdict = judge_canary(canary_window, stable_window, table.thresholds)
            if verdict.should_roll_back or (verdict.decision == "healthy" and _step_done(table, now)):
                verdicts.append(_Verdict(table, canary, verdict, canary_window, stable_window))
        return verdicts

    async def _roll_back_canary(self, breach: _Verdict) -> None:
        table, canary = breach.table, breach.canary
        if table.canary is None or table.canary.version_id != canary.version_id:
            return  # cut off already
        # Effective now for this process (requests keep flowing while the database transition is written).
        table.canary = None
        table.splitter = TrafficSplitter(TrafficPolicy(0, table.splitter.policy.shadow_percent))
        self._rolled_back.add((table.deployment_id, canary.version_id))
        reason = "; ".join(breach.verdict.reasons)
        details = breach.figures()
        if table.plan is not None:
            details |= {"step": table.plan["step"] + 1, "steps": table.plan["steps"]}
        await asyncio.to_thread(self._record_rollback, table.deployment_id, canary.version_id, reason, details)

    def _record_rollback(
        self, deployment_id: uuid.UUID, canary_version_id: uuid.UUID, reason: str, details: dict[str, Any]
    ) -> None:
        with self.session_scope() as session:
            decided = deployments.auto_rollback(
                session, deployment_id, canary_version_id, f"automatic: {reason}", details
            )
        if decided:
            # Counted once, by the process that carried the decision out.
            AUTO_ROLLBACKS.labels(str(deployment_id)).inc()
            log.warning("gateway.canary_rolled_back", deployment_id=str(deployment_id), reason=reason)

    async def _advance_canary(self, passed: _Verdict) -> None:
        table = passed.table
        outcome = await asyncio.to_thread(
            self._record_advance, table.deployment_id, passed.canary.version_id, table.splitter.policy, passed
        )
        if outcome is not None:
            log.info("gateway.canary_advanced", deployment_id=str(table.deployment_id), outcome=outcome)
        # The new share (or the promotion) applies in this process at once; in others within the table TTL.
        self.invalidate(table.deployment_id)

    def _record_advance(
        self, deployment_id: uuid.UUID, canary_version_id: uuid.UUID, policy: TrafficPolicy, passed: _Verdict
    ) -> str | None:
        with self.session_scope() as session:
            return deployments.advance_canary(
                session, deployment_id, canary_version_id, round(policy.canary_percent), passed.figures()
            )

    # --- shadow ----------------------------------------------------------------------------------

    def _mirror(
        self,
        table: RouteTable,
        shadow: Upstream,
        path: str,
        body: bytes,
        headers: dict[str, str],
        stable_answer: bytes,
    ) -> None:
        deployment = str(table.deployment_id)
        if self._shadow_in_flight >= MAX_SHADOW_IN_FLIGHT:
            SHADOW_COMPARISONS.labels(deployment, shadow.version, "dropped").inc()
            return
        self._shadow_in_flight += 1
        self._start_flushing()
        self._spawn(self._compare_shadow(deployment, shadow, path, body, headers, stable_answer))

    async def _compare_shadow(
        self,
        deployment: str,
        shadow: Upstream,
        path: str,
        body: bytes,
        headers: dict[str, str],
        stable_answer: bytes,
    ) -> None:
        tally = self._tally(uuid.UUID(deployment), shadow)
        started = time.perf_counter()
        try:
            response = await self._call(shadow, "POST", path, body, headers)
            tally.record((time.perf_counter() - started) * 1000.0, error=response.status_code >= 500)
            if response.status_code != 200:
                SHADOW_COMPARISONS.labels(deployment, shadow.version, "error").inc()
                return
            stable, mirrored = _predictions(orjson.loads(stable_answer)), _predictions(orjson.loads(response.content))
            # Looked up now, not when mirrored: a flush in between hands the previous tally to the shared state.
            stats = self._shadow_stats.setdefault((uuid.UUID(deployment), shadow.version_id), ShadowDiffStats())
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

    async def shadow_stats(self, deployment_id: uuid.UUID) -> dict[uuid.UUID, ShadowDiffSnapshot]:
        """The shadow comparisons of every gateway process, per version ever shadowed in the deployment."""
        await self.flush()  # this process's latest comparisons too
        return await asyncio.to_thread(self._read_shadow_stats, deployment_id)

    def _read_shadow_stats(self, deployment_id: uuid.UUID) -> dict[uuid.UUID, ShadowDiffSnapshot]:
        with self.session_scope() as session:
            version_ids: list[uuid.UUID] = list(
                session.scalars(
                    select(DeploymentHistory.to_version_id)
                    .where(
                        DeploymentHistory.deployment_id == deployment_id,
                        DeploymentHistory.action == "shadow",
                        DeploymentHistory.outcome == "succeeded",
                        DeploymentHistory.to_version_id.is_not(None),
                    )
                    .distinct()
                )
            )
        keys = [rollout_state.shadow_key(deployment_id, version_id) for version_id in version_ids]
        stored = self.stats_store.read(keys)
        return {
            version_id: rollout_state.shadow_snapshot(stored[key])
            for version_id, key in zip(version_ids, keys, strict=True)
            if key in stored
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
        """Let background work (shadow calls) finish, share the last counts (and carry out what they decide),
        then flush the prediction log."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        try:
            await self.flush()
        except Exception as exc:
            log.warning("gateway.rollout_state_unavailable", error=f"{type(exc).__name__}: {exc}")
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self.prediction_log is not None:
            await self.prediction_log.aclose()


def _step_done(table: RouteTable, now: float) -> bool:
    """The plan's current step has lasted its minimum time (its minimum of requests is the judge's)."""
    if table.plan is None:
        return False
    return now - (table.window.since or now) >= table.plan.get("step_seconds", 0.0)


def _predictions(answer: Any) -> Any:
    """The predictions of an MLflow (`predictions`) or V2 (`outputs[].data`) answer."""
    if isinstance(answer, dict):
        if "predictions" in answer:
            return answer["predictions"]
        if "outputs" in answer:
            return [output.get("data") for output in answer["outputs"]]
    return answer
