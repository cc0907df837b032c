"""Deployments of model versions to serving targets, and the history of every change to them."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base, JSONType, SoftDelete, Timestamps, UTCDateTime, UUIDPrimaryKey, utcnow

DEPLOYMENT_STATES = ("pending", "building_environment", "deploying", "healthy", "failed", "stopped", "rolled_back")
TARGETS = ("local", "kserve")
SERVER_ROLES = ("stable", "canary", "shadow")
SERVER_STATES = ("starting", "running", "failed")


class Deployment(UUIDPrimaryKey, Timestamps, SoftDelete, Base):
    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("project_id", "name"), Index(None, "model_version_id"))

    project_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    target: Mapped[str] = mapped_column(String(20), nullable=False, default="local")
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="pending")
    # The stable version; RESTRICT so a version cannot vanish from under a live deployment.
    model_version_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("model_versions.id", ondelete="RESTRICT"), nullable=False
    )
    canary_version_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    canary_percent: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Mirrored, never answered: see the gateway.
    shadow_version_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    shadow_percent: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # Model-server processes per serving role (stable, canary); the gateway balances across them.
    replicas: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")
    config: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    endpoint_url: Mapped[str | None] = mapped_column(Text)
    status_reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id", ondelete="SET NULL"))


class DeploymentHistory(UUIDPrimaryKey, Base):
    __tablename__ = "deployment_history"
    __table_args__ = (Index(None, "deployment_id", "created_at"),)

    deployment_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("deployments.id", ondelete="CASCADE"), nullable=False
    )
    action: Mapped[str] = mapped_column(String(40), nullable=False)
    from_version_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    to_version_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("model_versions.id", ondelete="SET NULL"))
    outcome: Mapped[str] = mapped_column(String(20), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class DeploymentServer(UUIDPrimaryKey, Timestamps, Base):
    """One local model-server process of a deployment, per role and replica; the gateway routes to these rows.

    A row exists only for a server that was started (or is being restarted): a rollout starts the new
    process first and swaps the row afterwards, so the previous version keeps serving until then.
    """

    __tablename__ = "deployment_servers"
    __table_args__ = (UniqueConstraint("deployment_id", "role", "replica"), Index(None, "model_version_id"))

    deployment_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("deployments.id", ondelete="CASCADE"), nullable=False
    )
    role: Mapped[str] = mapped_column(String(20), nullable=False)
    # 0 .. deployment.replicas - 1; a row without a pid is a replica waiting for supervision to start it.
    replica: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    model_version_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("model_versions.id", ondelete="RESTRICT"), nullable=False
    )
    # The spec to restart it with (resolved local model path, name, version label).
    model_uri: Mapped[str] = mapped_column(Text, nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False, default="running")
    pid: Mapped[int | None] = mapped_column(Integer)
    port: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(255), nullable=False, default="127.0.0.1")
    log_path: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    restarts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)


class RolloutCounter(Base):
    """A shared counter of the gateway's rollout state (requests, errors and latencies per deployment, version
    and second; shadow comparison sums), used when the platform has no Redis. Every gateway process adds to
    the same rows, so a canary is judged on the traffic of all of them; rows expire with their window."""

    __tablename__ = "rollout_counters"
    __table_args__ = (Index(None, "expires_at"),)

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    field: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[float] = mapped_column(Float, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
