"""Registered models, their numbered versions, stage transitions and aliases."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shared.db.base import Base, JSONType, SoftDelete, Timestamps, UTCDateTime, UUIDPrimaryKey, utcnow

STAGES = ("development", "staging", "production", "archived")

_LIVE = text("deleted_at IS NULL")


class Model(UUIDPrimaryKey, Timestamps, SoftDelete, Base):
    __tablename__ = "models"
    # Unique among live models only, so the name of a deleted model can be used again (as MLflow allows).
    __table_args__ = (Index(None, "project_id", "name", unique=True, postgresql_where=_LIVE, sqlite_where=_LIVE),)

    project_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(256), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id", ondelete="SET NULL"))
    # The last version number handed out. Bumped with UPDATE ... RETURNING, which locks the row, so
    # concurrent registrations queue on it and numbers are never reused (not even a deleted version's).
    last_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")

    aliases: Mapped[list[ModelAlias]] = relationship(
        back_populates="model", order_by="ModelAlias.alias", cascade="all, delete-orphan", passive_deletes=True
    )


class ModelVersion(UUIDPrimaryKey, Timestamps, SoftDelete, Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"), Index(None, "model_id", "stage"))

    model_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("models.id", ondelete="CASCADE"), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    stage: Mapped[str] = mapped_column(String(20), nullable=False, default="development")
    status: Mapped[str] = mapped_column(String(32), nullable=False, default="READY")
    description: Mapped[str | None] = mapped_column(Text)
    # What the client named (`runs:/...`, `models:/m-...`, an upload); artifact_uri is where it resolved to.
    source: Mapped[str | None] = mapped_column(Text)
    artifact_uri: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("experiment_runs.id", ondelete="SET NULL"), index=True
    )
    logged_model_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("logged_models.id", ondelete="SET NULL"), index=True
    )
    run_link: Mapped[str | None] = mapped_column(Text)
    signature: Mapped[dict | None] = mapped_column(JSONType)
    metrics: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    tags: Mapped[dict] = mapped_column(JSONType, nullable=False, default=dict)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id", ondelete="SET NULL"))

    model: Mapped[Model] = relationship()
    aliases: Mapped[list[ModelAlias]] = relationship(order_by="ModelAlias.alias", viewonly=True)


class ModelVersionTransition(UUIDPrimaryKey, Base):
    """One stage change of a version: who, when, from, to and why. Append-only."""

    __tablename__ = "model_version_transitions"
    __table_args__ = (Index(None, "model_version_id", "created_at"),)

    model_version_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("model_versions.id", ondelete="CASCADE"), nullable=False
    )
    from_stage: Mapped[str] = mapped_column(String(20), nullable=False)
    to_stage: Mapped[str] = mapped_column(String(20), nullable=False)
    comment: Mapped[str | None] = mapped_column(Text)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class ModelAlias(Timestamps, Base):
    """A named pointer (`champion`, `challenger`, ...) to one version; the key makes it unique per model."""

    __tablename__ = "model_aliases"
    __table_args__ = (Index(None, "model_version_id"),)

    model_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(255), primary_key=True)
    model_version_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("model_versions.id", ondelete="CASCADE"), nullable=False
    )
    updated_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("users.id", ondelete="SET NULL"))

    model: Mapped[Model] = relationship(back_populates="aliases")
    model_version: Mapped[ModelVersion] = relationship()
