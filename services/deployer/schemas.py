"""Pydantic I/O models of the deployer API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.deployer.domain.environments import EnvManager
from shared.core.model_refs import VersionRefFields
from shared.core.patch import PatchBody
from shared.db.models.deployer import DEPLOYMENT_STATES, SERVER_STATES

# Every value the API answers, listed in /openapi.json.
DeploymentStatus = Literal[DEPLOYMENT_STATES]  # type: ignore[valid-type]
ServerState = Literal[SERVER_STATES]  # type: ignore[valid-type]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class CanarySettings(_Input):
    """When the gateway rolls a canary back on its own: judged against the stable version over the same
    sliding window (the last `window_seconds` and/or the canary's last `max_requests` requests), on the
    traffic of every gateway process. Requests refused as bad input (4xx) count against no version."""

    # How far the canary's error rate may exceed the stable version's.
    max_error_rate: float = Field(0.05, ge=0.0, le=1.0)
    # A ceiling on the canary's p95 latency, whatever the stable version does.
    max_p95_latency_ms: float | None = Field(None, gt=0)
    # How many times the stable version's p95 latency the canary's may be.
    max_p95_latency_ratio: float | None = Field(None, gt=1.0)
    min_requests: int = Field(50, ge=1)
    window_seconds: float | None = Field(60.0, gt=0)
    max_requests: int | None = Field(500, ge=1)
    # A request header (e.g. X-User-Id) whose value keeps a caller on one version (A/B by user); requests
    # without it are split at random.
    sticky_header: str | None = Field(None, pattern=r"^[A-Za-z0-9-]{1,64}$")

    @model_validator(mode="after")
    def _has_window(self) -> CanarySettings:
        if self.window_seconds is None and self.max_requests is None:
            raise ValueError("the canary window needs window_seconds, max_requests or both")
        return self


# Model-server processes per version at most, on one machine.
MAX_REPLICAS = 32


class BatchingSettings(_Input):
    """Request batching in the model servers (adaptive, as in MLServer and BentoML): concurrent requests to
    one version are merged into one model call of at most `max_batch_size` requests, sent when full or
    `max_latency_ms` after its first request, and each caller gets its own rows back. Requests are checked
    before they join a batch, so a bad one is refused alone."""

    max_batch_size: int = Field(32, ge=2, le=1024)
    max_latency_ms: float = Field(5.0, ge=0, le=1000)


class BatchingRead(BaseModel):
    max_batch_size: int
    max_latency_ms: float


class KServeOptions(_Input):
    namespace: str | None = None
    requests: dict[str, str | int] | None = None
    limits: dict[str, str | int] | None = None
    min_replicas: int | None = Field(None, ge=0)
    max_replicas: int | None = Field(None, ge=0)
    service_account_name: str | None = None
    runtime: str | None = None


class DeploymentCreate(VersionRefFields, _Input):
    """The version to serve: `model_version_id`, or `model` with `version` or `alias`."""

    name: str = Field(min_length=1, max_length=200)
    target: Literal["local", "kserve"] = "local"
    # Default: the API key's project, the X-Tessera-Project header, or the organization's `default` project.
    project_id: uuid.UUID | None = None
    canary: CanarySettings = Field(default_factory=CanarySettings)
    kserve: KServeOptions | None = None
    # The monitor that receives the deployment's served predictions; none = not logged.
    monitor_id: uuid.UUID | None = None
    # Model-server processes per version (stable and canary); the gateway balances across them. On KServe,
    # the predictor's minReplicas and maxReplicas unless `kserve` sets them.
    replicas: int = Field(1, ge=1, le=MAX_REPLICAS)
    batching: BatchingSettings | None = None
    # The Python environment of the model servers: `auto` builds one from the model's logged requirements
    # when the platform's packages do not satisfy them; `virtualenv` always builds one; `local` never does.
    env_manager: EnvManager = "auto"


class DeploymentUpdate(PatchBody):
    """Fields left out are unchanged. `monitor_id`: the monitor that receives the served predictions (null
    unlinks); `replicas`: model-server processes per version (added ones start within seconds, surplus
    ones stop); `batching`: request batching settings (null turns batching off)."""

    clearable = frozenset({"monitor_id", "batching"})

    monitor_id: uuid.UUID | None = None
    replicas: int | None = Field(None, ge=1, le=MAX_REPLICAS)
    batching: BatchingSettings | None = None


class CanaryStart(VersionRefFields, _Input):
    """The canary's version (`model_version_id`, or `model` with `version` or `alias`) and its share of the
    traffic: a fixed `percent`, or a progressive rollout plan of `steps` (e.g. [5, 25, 50, 100]): each step
    lasts at least `step_seconds` and the canary's `min_requests`, is analysed against the stable version,
    and leads to the next; after the last the canary is promoted, and at any step it is rolled back when it
    does worse (the deployment's `canary` settings)."""

    percent: int | None = Field(None, ge=1, le=100)
    steps: list[int] | None = Field(None, min_length=1, max_length=20)
    step_seconds: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _percent_or_steps(self) -> CanaryStart:
        if (self.percent is None) == (self.steps is None):
            raise ValueError("give either percent or steps")
        if self.steps is not None:
            if any(not 1 <= step <= 100 for step in self.steps):
                raise ValueError("steps are percentages between 1 and 100")
            if self.steps != sorted(set(self.steps)):
                raise ValueError("steps must increase")
        return self

    def start_percent(self) -> int:
        """The fixed percent, or the plan's first step."""
        if self.percent is not None:
            return self.percent
        assert self.steps is not None  # one of the two, by validation
        return self.steps[0]

    def plan(self) -> dict[str, Any] | None:
        return None if self.steps is None else {"steps": self.steps, "step_seconds": self.step_seconds}


class ShadowSet(VersionRefFields, _Input):
    """A version to mirror traffic to (`model_version_id`, or `model` with `version` or `alias`); none of
    them (or `model_version_id: null`) stops mirroring."""

    version_ref_required = False
    percent: int = Field(100, ge=1, le=100)


class RollbackRequest(_Input):
    reason: str | None = Field(None, max_length=2000)


class ServerRead(_Read):
    role: str
    replica: int
    model_version_id: uuid.UUID
    state: ServerState
    pid: int | None
    port: int | None
    restarts: int
    started_at: datetime | None
    last_error: str | None


class DeploymentRead(_Read):
    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    target: str
    status: DeploymentStatus
    status_reason: str | None
    model_version_id: uuid.UUID
    canary_version_id: uuid.UUID | None
    canary_percent: int
    shadow_version_id: uuid.UUID | None
    shadow_percent: int
    replicas: int
    # None: batching is off.
    batching: BatchingRead | None = None
    endpoint_url: str | None
    # The linked monitor (the same link as the monitor's `deployment_id`).
    monitor_id: uuid.UUID | None = None
    config: dict[str, Any]
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    servers: list[ServerRead] = []


class HistoryRead(_Read):
    id: uuid.UUID
    action: str
    outcome: str
    from_version_id: uuid.UUID | None
    to_version_id: uuid.UUID | None
    reason: str | None
    details: dict[str, Any]
    actor_id: uuid.UUID | None
    created_at: datetime


class TrafficRead(BaseModel):
    """What this server process forwarded for one version in one role since it started."""

    role: str
    model_version_id: uuid.UUID
    version: str
    requests: int
    errors: int
    mean_latency_ms: float | None
    p95_latency_ms: float | None


class ShadowStatsRead(BaseModel):
    model_version_id: uuid.UUID
    compared_count: int
    exact_match_count: int
    exact_match_rate: float | None
    numeric_value_count: int
    mean_abs_diff: float | None
    max_abs_diff: float | None
