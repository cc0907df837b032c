"""Request and response bodies of the notifier (pydantic; never ORM classes).

Channel secrets (URLs, headers, passwords, signing secrets) appear only in requests, never in
responses — except a webhook's signing secret, shown once when created or rotated.
"""

from __future__ import annotations

import importlib.metadata
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from shared.core.fields import Timestamp
from shared.core.pagination import Page
from shared.core.patch import PatchBody

NO_NUL = r"^[^\x00]*$"
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_NUL)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=NO_NUL)]
EventType = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+(\.[a-z0-9_*]+)*$|^\*$", max_length=100)]
Matcher = str | dict[str, Any]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- channels ----------------------------------------------------------------------------------


class _ChannelCreate(_Request):
    name: Name
    organization_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None


class SlackChannelCreate(_ChannelCreate):
    type: Literal["slack"]
    url: Url = Field(description="Slack incoming-webhook URL (secret)")


class WebhookChannelCreate(_ChannelCreate):
    type: Literal["webhook"]
    url: Url = Field(description="Receiver URL (secret)")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers (secret)")
    signing_secret: str | None = Field(None, description="whsec_...; generated when omitted")


class EmailChannelCreate(_ChannelCreate):
    type: Literal["email"]
    smtp_host: Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=NO_NUL)]
    smtp_port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = Field(None, description="SMTP password (secret)")
    sender: Annotated[str, StringConstraints(min_length=3, max_length=320, pattern=NO_NUL)]
    recipients: list[Annotated[str, StringConstraints(min_length=3, max_length=320)]] = Field(min_length=1)


ChannelCreate = Annotated[SlackChannelCreate | WebhookChannelCreate | EmailChannelCreate, Field(discriminator="type")]


class ChannelUpdate(PatchBody):
    """Only what is given changes; type-specific fields must match the channel's type. Null clears the
    webhook's extra headers and the SMTP login."""

    clearable = frozenset({"headers", "username", "password"})

    name: Name | None = None
    enabled: bool | None = None
    url: Url | None = None
    headers: dict[str, str] | None = None
    smtp_host: str | None = None
    smtp_port: int | None = Field(None, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] | None = None
    username: str | None = None
    password: str | None = None
    sender: str | None = None
    recipients: list[str] | None = Field(None, min_length=1)


class ChannelRead(_Read):
    id: uuid.UUID
    organization_id: uuid.UUID
    project_id: uuid.UUID | None
    name: str
    type: str
    enabled: bool
    disabled_reason: str | None
    config: dict[str, Any] = Field(description="What may be shown; secrets never are")
    created_at: datetime
    updated_at: datetime


class ChannelCreated(ChannelRead):
    signing_secret: str | None = Field(None, description="Webhook signing secret; shown only now")


class SecretRotation(_Request):
    overlap_seconds: int = Field(86400, ge=0, le=30 * 86400, description="How long the old secret still signs")
    signing_secret: str | None = Field(None, description="whsec_...; generated when omitted")


class SecretRotated(BaseModel):
    channel_id: uuid.UUID
    signing_secret: str = Field(description="The new secret; shown only now")
    previous_expires_at: datetime


# --- rules -------------------------------------------------------------------------------------


class _RuleFields(_Request):
    description: str | None = None
    enabled: bool = True
    project_id: uuid.UUID | None = None
    event_types: list[EventType] = Field(default_factory=list, description="Glob patterns; empty = every event")
    min_severity: Literal["critical", "high", "warning", "info"] | None = None
    model_id: uuid.UUID | None = None
    deployment_id: uuid.UUID | None = None
    matchers: list[Matcher] = Field(default_factory=list, description="e.g. 'severity=~\"critical|high\"'")
    channel_ids: list[uuid.UUID] = Field(min_length=1)
    group_by: list[str] = Field(default_factory=list, description='Label names; ["..."] = every label')
    group_wait_s: int = Field(30, ge=0, le=86400)
    group_interval_s: int = Field(300, ge=1, le=86400)
    repeat_interval_s: int = Field(14400, ge=1, le=30 * 86400)
    send_resolved: bool | None = Field(None, description="None: the channel type's default")
    mute_window_ids: list[uuid.UUID] = Field(default_factory=list)


class RuleCreate(_RuleFields):
    name: Name
    organization_id: uuid.UUID | None = None


class RuleUpdate(PatchBody):
    # Null: no description, every project, any severity/model/deployment, the channel type's default.
    clearable = frozenset({"description", "project_id", "min_severity", "model_id", "deployment_id", "send_resolved"})

    name: Name | None = None
    description: str | None = None
    enabled: bool | None = None
    project_id: uuid.UUID | None = None
    event_types: list[EventType] | None = None
    min_severity: Literal["critical", "high", "warning", "info"] | None = None
    model_id: uuid.UUID | None = None
    deployment_id: uuid.UUID | None = None
    matchers: list[Matcher] | None = None
    channel_ids: list[uuid.UUID] | None = Field(None, min_length=1)
    group_by: list[str] | None = None
    group_wait_s: int | None = Field(None, ge=0, le=86400)
    group_interval_s: int | None = Field(None, ge=1, le=86400)
    repeat_interval_s: int | None = Field(None, ge=1, le=30 * 86400)
    send_resolved: bool | None = None
    mute_window_ids: list[uuid.UUID] | None = None


class RuleRead(_Read):
    id: uuid.UUID
    organization_id: uuid.UUID
    project_id: uuid.UUID | None
    name: str
    description: str | None
    enabled: bool
    event_types: list[str]
    min_severity: str | None
    model_id: uuid.UUID | None
    deployment_id: uuid.UUID | None
    matchers: list[dict[str, Any]]
    channel_ids: list[uuid.UUID]
    group_by: list[str]
    group_wait_s: int
    group_interval_s: int
    repeat_interval_s: int
    send_resolved: bool | None
    mute_window_ids: list[uuid.UUID]
    created_at: datetime
    updated_at: datetime


class RulePreviewRequest(_Request):
    organization_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None
    event_type: EventType
    payload: dict[str, Any] = Field(default_factory=dict)


class RuleHit(BaseModel):
    rule: RuleRead
    group_key: str
    silenced: bool
    muted: bool


class RulePreview(BaseModel):
    labels: dict[str, str] = Field(description="The labels the event's alert would carry")
    rules: list[RuleHit]


# --- silences and mute windows -----------------------------------------------------------------


class SilenceCreate(_Request):
    organization_id: uuid.UUID | None = None
    matchers: list[Matcher] = Field(min_length=1)
    starts_at: Timestamp | None = Field(None, description="Default: now")
    ends_at: Timestamp
    comment: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class SilenceRead(_Read):
    id: uuid.UUID
    organization_id: uuid.UUID
    matchers: list[dict[str, Any]]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    state: str
    created_at: datetime


class MuteWindowCreate(_Request):
    organization_id: uuid.UUID | None = None
    name: Name
    time_intervals: list[dict[str, Any]] = Field(
        min_length=1,
        description='Alertmanager time intervals, e.g. {"weekdays": ["saturday:sunday"], "location": "Europe/Berlin"}',
    )


class MuteWindowUpdate(_Request):
    time_intervals: list[dict[str, Any]] = Field(min_length=1)


class MuteWindowRead(_Read):
    id: uuid.UUID
    organization_id: uuid.UUID
    name: str
    time_intervals: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime


class InhibitRuleCreate(_Request):
    organization_id: uuid.UUID | None = None
    name: Name
    source_matchers: list[Matcher] = Field(min_length=1, description='e.g. ["severity=critical"]')
    target_matchers: list[Matcher] = Field(min_length=1, description='e.g. ["severity=~warning|info"]')
    equal: list[Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=200)]] = Field(
        default_factory=list, description="Labels that must have the same value on source and target"
    )


class InhibitRuleRead(_Read):
    id: uuid.UUID
    organization_id: uuid.UUID
    name: str
    source_matchers: list[dict[str, Any]]
    target_matchers: list[dict[str, Any]]
    equal: list[str]
    created_at: datetime
    updated_at: datetime


class HoldingSilence(BaseModel):
    id: uuid.UUID
    matchers: list[str]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str


class InhibitingAlert(BaseModel):
    fingerprint: str = Field(description="The inhibiting alert's label fingerprint")
    labels: dict[str, str]
    starts_at: datetime


class HeldAlertRead(BaseModel):
    """A firing alert as the notifier holds it, and what keeps its notifications back."""

    fingerprint: str = Field(description="The label fingerprint (Alertmanager's)")
    labels: dict[str, str]
    starts_at: datetime
    receivers: list[str] = Field(description="The rules that route it")
    state: Literal["active", "suppressed"]
    silenced_by: list[HoldingSilence]
    inhibited_by: list[InhibitingAlert]


# --- notifications, deliveries, events ---------------------------------------------------------


class NotificationRead(_Read):
    id: uuid.UUID
    organization_id: uuid.UUID
    rule_id: uuid.UUID | None
    group_key: str
    kind: str
    status: str
    reason: str | None
    payload: dict[str, Any]
    created_at: datetime


NotificationPage = Page[NotificationRead]


class DeliveryAttemptRead(_Read):
    attempt: int
    started_at: datetime
    outcome: str
    status_code: int | None
    latency_ms: float
    error: str | None


class DeliveryRead(_Read):
    id: uuid.UUID
    notification_id: uuid.UUID
    channel_id: uuid.UUID
    rule_id: uuid.UUID | None
    state: str
    attempts: int
    total_attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime


class DeliveryDetail(DeliveryRead):
    attempt_log: list[DeliveryAttemptRead]


DeliveryPage = Page[DeliveryRead]


# Limits of what an alert (or a custom event's payload) may carry, refused at intake with a 422 naming
# the field: every label is part of the alert's identity and, with `group_by: ["..."]`, of its group.
# Prometheus's label names; the values are any text.
MAX_LABEL_NAME_CHARS = 200
MAX_LABEL_VALUE_CHARS = 2048
MAX_LABELS = 64
MAX_ANNOTATION_VALUE_CHARS = 16384
MAX_ANNOTATIONS = 64
LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=MAX_LABEL_NAME_CHARS)]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE_CHARS)]
AnnotationName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL_NAME_CHARS)]
AnnotationValue = Annotated[str, StringConstraints(max_length=MAX_ANNOTATION_VALUE_CHARS)]
Labels = Annotated[dict[LabelName, LabelValue], Field(max_length=MAX_LABELS)]
Annotations = Annotated[dict[AnnotationName, AnnotationValue], Field(max_length=MAX_ANNOTATIONS)]


class EventCreate(_Request):
    organization_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None
    event_type: Annotated[str, StringConstraints(pattern=r"^custom(\.[a-z0-9_]+)+$", max_length=100)] = Field(
        description="custom.<name>: platform event types are emitted by the platform only"
    )
    payload: dict[str, Any] = Field(
        default_factory=dict,
        description="Alert fields: labels, annotations (within the Alertmanager API's limits), summary, "
        "description, severity, status (firing|resolved), fingerprint, starts_at, ends_at, url",
    )

    @field_validator("payload")
    @classmethod
    def _alert_fields_well_formed(cls, payload: dict[str, Any]) -> dict[str, Any]:
        # What becomes the alert's labels and annotations obeys the limits of posted alerts.
        _EventAlertFields.model_validate(payload)
        return payload


_EventLabelName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL_NAME_CHARS)]


class _EventAlertFields(BaseModel):
    """The parts of a custom event's payload the notifier reads into its alert (values become text)."""

    labels: Annotated[dict[_EventLabelName, LabelValue | int | float | bool], Field(max_length=MAX_LABELS)] = Field(
        default_factory=dict
    )
    annotations: Annotated[
        dict[AnnotationName, AnnotationValue | int | float | bool], Field(max_length=MAX_ANNOTATIONS)
    ] = Field(default_factory=dict)
    fingerprint: Annotated[str, StringConstraints(max_length=200)] | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None


class EventAccepted(BaseModel):
    id: uuid.UUID
    event_type: str
    created_at: datetime


_GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)


class PostableAlert(BaseModel):
    """One alert of Alertmanager's API v2 (`postableAlert`), as Prometheus and Grafana post it."""

    # Senders add fields of their own over time; Alertmanager ignores what it does not know.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    labels: Labels = Field(min_length=1)
    annotations: Annotations = Field(default_factory=dict)
    starts_at: Timestamp | None = Field(default=None, alias="startsAt")
    ends_at: Timestamp | None = Field(default=None, alias="endsAt")
    generator_url: Url | None = Field(default=None, alias="generatorURL")

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _unset_when_zero(cls, value: datetime | None) -> datetime | None:
        # Go clients (amtool, Prometheus) send the zero time for "not set".
        return None if value == _GO_ZERO_TIME else value

    @model_validator(mode="after")
    def _ends_after_start(self) -> PostableAlert:
        if self.starts_at and self.ends_at and self.ends_at < self.starts_at:
            raise ValueError("endsAt is before startsAt")
        return self


class _Alertmanager(BaseModel):
    # Alertmanager's JSON is camelCase.
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class AlertReceiver(_Alertmanager):
    name: str


class GettableAlertStatus(_Alertmanager):
    state: Literal["active", "suppressed"]
    silenced_by: list[str] = Field(alias="silencedBy")
    inhibited_by: list[str] = Field(alias="inhibitedBy")
    # Mute windows act on a rule's notifications, not on alerts: nothing to list here.
    muted_by: list[str] = Field(default_factory=list, alias="mutedBy")


class GettableAlert(_Alertmanager):
    """One alert of Alertmanager's `GET /api/v2/alerts`."""

    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(alias="endsAt")
    updated_at: datetime = Field(alias="updatedAt")
    generator_url: str | None = Field(alias="generatorURL")
    fingerprint: str
    receivers: list[AlertReceiver]
    status: GettableAlertStatus


class AlertmanagerMatcher(_Alertmanager):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    value: Annotated[str, StringConstraints(max_length=2000, pattern=NO_NUL)]
    is_regex: bool = Field(alias="isRegex")
    is_equal: bool = Field(default=True, alias="isEqual")


class PostableSilence(_Alertmanager):
    """Alertmanager's `postableSilence` (amtool, Grafana). `createdBy` is taken, but the silence records
    the caller's own identity."""

    id: uuid.UUID | None = None
    matchers: list[AlertmanagerMatcher] = Field(min_length=1)
    starts_at: Timestamp = Field(alias="startsAt")
    ends_at: Timestamp = Field(alias="endsAt")
    created_by: Annotated[str, StringConstraints(max_length=320)] = Field(default="", alias="createdBy")
    comment: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class SilenceCreated(_Alertmanager):
    silence_id: uuid.UUID = Field(alias="silenceID")


class SilenceStatus(_Alertmanager):
    state: Literal["pending", "active", "expired"]


class GettableSilence(_Alertmanager):
    id: uuid.UUID
    status: SilenceStatus
    updated_at: datetime = Field(alias="updatedAt")
    matchers: list[AlertmanagerMatcher]
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime = Field(alias="endsAt")
    created_by: str = Field(alias="createdBy")
    comment: str


class AlertmanagerStatus(_Alertmanager):
    cluster: dict[str, Any]
    version_info: dict[str, str] = Field(alias="versionInfo")
    config: dict[str, str]
    uptime: datetime

    @classmethod
    def for_tessera(cls, started_at: datetime) -> AlertmanagerStatus:
        version = importlib.metadata.version("tessera")
        return cls(
            cluster={"name": "tessera", "status": "disabled", "peers": []},
            version_info={
                "version": version,
                "revision": "",
                "branch": "",
                "buildUser": "",
                "buildDate": "",
                "goVersion": "",
            },
            # Routing lives in Tessera's rules (/api/v1/rules), not in an Alertmanager YAML file.
            config={"original": ""},
            uptime=started_at,
        )
