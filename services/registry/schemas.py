"""Request and response bodies of the registry service (pydantic; never ORM classes)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
)

from shared.core.auth import SCOPES
from shared.core.fields import Timestamp
from shared.core.pagination import Page
from shared.core.patch import PatchBody

# --- Identity, tenancy, API keys and the audit log ------------------------------------------------
# Requests forbid unknown fields so a typo is a 422, not a silently ignored setting. Strings are bounded
# to their column sizes and refuse NUL, which PostgreSQL text cannot store.

NO_NUL = r"^[^\x00]*$"
SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?$"

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_NUL)]
Slug = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=SLUG_PATTERN)]
Description = Annotated[str, StringConstraints(max_length=10_000, pattern=NO_NUL)]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256, pattern=NO_NUL)]
Email = Annotated[EmailStr, StringConstraints(max_length=320)]
OrgRole = Literal["owner", "admin", "member", "viewer"]
ProjectRole = Literal["admin", "member", "viewer"]
if TYPE_CHECKING:
    Scope = str  # at run time a Literal of every scope, built from SCOPES (which mypy cannot evaluate)
else:
    Scope = Literal[tuple(sorted(SCOPES))]


# Time zone required (naive times are ambiguous) and normalised to UTC.


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class LoginRequest(_Request):
    email: Annotated[str, StringConstraints(min_length=1, max_length=320, pattern=NO_NUL)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=NO_NUL)]


class TokenRead(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime


class UserCreate(_Request):
    email: Email
    password: Password
    full_name: Name | None = None
    # Set by an org admin adding a new person to their organization (required when sign-up is closed).
    organization_id: uuid.UUID | None = None
    role: OrgRole = "member"


class UserUpdate(PatchBody):
    full_name: Name | None = None
    password: Password | None = None
    # Required with `password`: a stolen session must not be able to lock the owner out.
    current_password: Annotated[str, StringConstraints(max_length=256, pattern=NO_NUL)] | None = None


class UserRead(_Read):
    id: uuid.UUID
    email: str
    full_name: str | None
    created_at: datetime
    last_login_at: datetime | None


class MeOrganization(BaseModel):
    id: uuid.UUID
    slug: str
    name: str
    role: OrgRole


class MeProjectRole(BaseModel):
    project_id: uuid.UUID
    organization_id: uuid.UUID
    role: ProjectRole


class MeApiKey(BaseModel):
    id: uuid.UUID
    scopes: list[str]
    organization_id: uuid.UUID | None
    project_id: uuid.UUID | None


class MeRead(BaseModel):
    user: UserRead
    organizations: list[MeOrganization]
    # Explicit project roles only; every other project takes its role from the organization role.
    project_roles: list[MeProjectRole]
    api_key: MeApiKey | None = None


class OrganizationCreate(_Request):
    name: Name
    # Derived from the name when omitted.
    slug: Slug | None = None
    description: Description | None = None


class _NameAndDescriptionUpdate(PatchBody):
    clearable = frozenset({"description"})

    name: Name | None = None
    description: Description | None = None


class OrganizationUpdate(_NameAndDescriptionUpdate):
    pass


class OrganizationRead(_Read):
    id: uuid.UUID
    name: str
    slug: str
    description: str | None
    role: OrgRole
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


OrganizationPage = Page[OrganizationRead]


class MembershipCreate(_Request):
    email: Email
    role: OrgRole = "member"


class MembershipUpdate(PatchBody):
    role: OrgRole


class MembershipRead(_Read):
    user_id: uuid.UUID
    email: str
    full_name: str | None
    role: OrgRole
    created_at: datetime


MembershipPage = Page[MembershipRead]


class ProjectCreate(_Request):
    name: Name
    slug: Slug | None = None
    description: Description | None = None


class ProjectUpdate(_NameAndDescriptionUpdate):
    pass


class ProjectRead(_Read):
    id: uuid.UUID
    organization_id: uuid.UUID
    name: str
    slug: str
    description: str | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


ProjectPage = Page[ProjectRead]


class ProjectMemberCreate(_Request):
    email: Email
    role: ProjectRole


class ProjectMemberUpdate(PatchBody):
    role: ProjectRole


class ProjectMemberRead(_Read):
    user_id: uuid.UUID
    email: str
    full_name: str | None
    role: ProjectRole
    created_at: datetime


ProjectMemberPage = Page[ProjectMemberRead]


class ApiKeyCreate(_Request):
    name: Name
    organization_id: uuid.UUID
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=len(SCOPES))]
    # Limit the key to one project of the organization.
    project_id: uuid.UUID | None = None
    # At most one of the two; neither means the key does not expire.
    expires_at: Timestamp | None = None
    ttl_seconds: Annotated[int, Field(ge=60, le=10 * 365 * 24 * 3600)] | None = None


class ApiKeyRead(_Read):
    id: uuid.UUID
    name: str
    prefix: str
    user_id: uuid.UUID
    organization_id: uuid.UUID
    project_id: uuid.UUID | None
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    # Shown once, here; only its digest is stored.
    key: str


ApiKeyPage = Page[ApiKeyRead]


class AuditLogRead(_Read):
    id: uuid.UUID
    created_at: datetime
    organization_id: uuid.UUID | None
    actor_user_id: uuid.UUID | None
    # Filled from the users table by the query (one join, no look-up per row).
    actor_email: str | None = None
    actor_api_key_id: uuid.UUID | None
    action: str
    object_type: str | None
    object_id: str | None
    method: str | None
    path: str | None
    ip_address: str | None
    user_agent: str | None
    request_id: str | None
    outcome: str
    status_code: int | None
    details: dict[str, Any]


AuditLogPage = Page[AuditLogRead]


# --- Model registry: models, versions, stages, aliases, lineage -----------------------------------

# '/' and ':' would make `models:/<name>/<version>` URIs ambiguous.
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^/:\x00]+$")]
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=250, pattern=NO_NUL)]
TagValue = Annotated[str, StringConstraints(max_length=100_000, pattern=NO_NUL)]
Stage = Literal["development", "staging", "production", "archived"]


class ModelCreate(_Request):
    name: ModelName
    description: Description | None = None
    tags: dict[TagKey, TagValue] = Field(default_factory=dict)


class ModelUpdate(PatchBody):
    clearable = frozenset({"description"})

    name: ModelName | None = None
    description: Description | None = None
    tags: dict[TagKey, TagValue] | None = Field(None, description="Replaces the whole set")


class ModelRead(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    description: str | None
    tags: dict[str, str]
    aliases: dict[str, int] = Field(description="alias -> version number")
    last_version: int
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


ModelPage = Page[ModelRead]


class ModelVersionCreate(_Request):
    """From a tracked run's model artifact (run_id + artifact_path) or an MLflow 3 logged model."""

    run_id: uuid.UUID | None = None
    artifact_path: Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=NO_NUL)] = "model"
    logged_model_id: Annotated[str, StringConstraints(pattern=r"^(m-)?[0-9a-fA-F-]{32,36}$")] | None = None
    description: Description | None = None
    tags: dict[TagKey, TagValue] = Field(default_factory=dict)


class ModelVersionUpdate(PatchBody):
    clearable = frozenset({"description"})

    description: Description | None = None
    tags: dict[TagKey, TagValue] | None = Field(None, description="Replaces the whole set")


class ModelVersionRead(BaseModel):
    id: uuid.UUID
    model_id: uuid.UUID
    model_name: str
    version: int
    stage: Stage
    status: str
    description: str | None
    source: str | None
    artifact_uri: str | None
    run_id: uuid.UUID | None
    logged_model_id: uuid.UUID | None
    signature: dict[str, Any] | None
    metrics: dict[str, float | None] = Field(description="The run's latest metrics when registered (NaN as null)")
    tags: dict[str, str]
    aliases: list[str]
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


ModelVersionPage = Page[ModelVersionRead]


class StageTransitionCreate(_Request):
    stage: Stage
    comment: Description | None = None
    archive_existing: bool = Field(
        True, description="Archive the versions already in the target stage (staging/production only)"
    )


class StageTransitionRead(_Read):
    id: uuid.UUID
    model_version_id: uuid.UUID
    from_stage: Stage
    to_stage: Stage
    comment: str | None
    actor_id: uuid.UUID | None
    created_at: datetime


class StageTransitionResult(BaseModel):
    model_version: ModelVersionRead
    transitions: list[StageTransitionRead] = Field(description="Made by this request, archived versions first")


class AliasSet(_Request):
    version: int = Field(ge=1)


class AliasRead(BaseModel):
    model_id: uuid.UUID
    alias: str
    version: int
    model_version_id: uuid.UUID


class LineageRun(_Read):
    id: uuid.UUID
    name: str | None
    status: str
    start_time: int | None
    end_time: int | None
    artifact_uri: str | None


class LineageExperiment(_Read):
    id: uuid.UUID
    name: str


class LineageDataset(BaseModel):
    id: uuid.UUID
    name: str
    digest: str
    source_type: str
    source: str
    tags: dict[str, Any] = Field(description="Input tags, e.g. mlflow.data.context=training")


class LineageLoggedModel(_Read):
    id: uuid.UUID
    name: str
    artifact_location: str
    status: str


class LineageDeployment(BaseModel):
    id: uuid.UUID
    name: str
    target: str
    status: str
    role: Literal["stable", "canary"]


class LineageDriftReport(_Read):
    id: uuid.UUID
    status: str
    dataset_drift: bool | None
    drift_share: float | None
    number_of_columns: int
    number_of_drifted_columns: int
    created_at: datetime


class LineageMonitor(BaseModel):
    id: uuid.UUID
    name: str
    deployment_id: uuid.UUID | None
    enabled: bool
    drift_reports: list[LineageDriftReport] = Field(description="The latest few, newest first")


class ModelVersionLineage(BaseModel):
    model_version: ModelVersionRead
    run: LineageRun | None
    experiment: LineageExperiment | None
    logged_model: LineageLoggedModel | None
    datasets: list[LineageDataset]
    deployments: list[LineageDeployment]
    monitors: list[LineageMonitor]


# --- Dead letters: items a batch consumer quarantined ----------------------------------------------


class DeadLetterRead(_Read):
    id: uuid.UUID
    consumer: str = Field(description='The task that failed on the item, e.g. "notifier.handle_events"')
    item_id: uuid.UUID = Field(description="The event, delivery or group id the consumer was given")
    organization_id: uuid.UUID | None
    state: Literal["retrying", "quarantined", "replaying", "resolved"]
    attempts: int = Field(description="Failures since it was first seen or last replayed")
    error: str
    created_at: datetime
    last_failed_at: datetime
    replayed_at: datetime | None
    resolved_at: datetime | None


DeadLetterPage = Page[DeadLetterRead]
