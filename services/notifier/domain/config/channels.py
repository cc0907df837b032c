"""Channels: create/read/update/delete with secrets encrypted at rest, webhook signing-secret rotation,
and the test button (a message sent through the very claim, send and record path of the pipeline).

What a channel needs but must never show — the Slack webhook URL, the webhook URL and its custom
headers, the SMTP password, the `whsec_` signing secrets — lives Fernet-encrypted in
`secret_encrypted`; `config` keeps only what may be displayed (hosts, header names, recipients).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    select,
)
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from services.notifier.domain import attempt_log, dispatch, records, senders
from services.notifier.domain.messages import build_test_notification
from services.notifier.domain.organizations import PageRequest, page_in_organization, resolve_organization
from services.notifier.domain.senders import SmtpSecurity
from shared.core import audit
from shared.core.auth import Access
from shared.core.crypto import SecretBox
from shared.core.errors import AlreadyExists, InvalidParameter, NotFound
from shared.core.outbound import (
    OutboundPolicy,
    ResolutionFailed,
    parse_url,
    vet_host,
)
from shared.core.pagination import RowPage
from shared.core.settings import Settings
from shared.db.base import utcnow
from shared.db.models import (
    Delivery,
    Notification,
    NotificationChannel,
)

# Which of a channel type's fields are secret (encrypted, never returned).
SECRET_FIELDS = {"slack": ("url",), "webhook": ("url", "headers"), "email": ("password",)}


VISIBLE_FIELDS = {
    "slack": (),
    "webhook": (),
    "email": ("smtp_host", "smtp_port", "security", "username", "sender", "recipients"),
}


def _check_reachable(host: str, port: int, policy: OutboundPolicy) -> None:
    """Refuse now what every send would refuse (an OutboundRefused is an InvalidParameter, naming the
    address and the allow-list setting). A name that does not resolve yet is kept: DNS may answer later."""
    with contextlib.suppress(ResolutionFailed):
        vet_host(host, port, policy)


def _check_url(url: str, policy: OutboundPolicy) -> str:
    """The URL in the one form that is checked, stored and sent to (read by the parser that sends)."""
    parsed = parse_url(url)
    # parse_url refuses a URL without a host; the scheme gives the port.
    _check_reachable(str(parsed.raw_host), int(parsed.port or 0), policy)
    return str(parsed)


def _check_signing_secret(secret: str) -> str:
    try:
        Webhook(secret)
    except Exception:  # the library raises plain errors for bad base64
        raise InvalidParameter("signing secret must be 'whsec_' followed by base64") from None
    if not secret.startswith("whsec_"):
        raise InvalidParameter("signing secret must start with 'whsec_'")
    return secret


def _validate(channel_type: str, fields: dict[str, Any], policy: OutboundPolicy) -> None:
    if channel_type in ("slack", "webhook"):
        fields["url"] = _check_url(fields.get("url") or "", policy)
    if channel_type == "webhook":
        fields["headers"] = senders.validate_custom_headers(fields.get("headers") or {})
    if channel_type == "email":
        if not fields.get("recipients") or not fields.get("sender") or not fields.get("smtp_host"):
            raise InvalidParameter("an email channel needs smtp_host, sender and at least one recipient")
        SmtpSecurity(fields["security"])
        _check_reachable(fields["smtp_host"], fields["smtp_port"], policy)


def _visible_config(channel_type: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    config = {name: fields.get(name) for name in VISIBLE_FIELDS[channel_type]}
    if "url" in SECRET_FIELDS[channel_type]:
        config["host"] = parse_url(fields["url"]).host
    if channel_type == "webhook":
        config["header_names"] = sorted(fields.get("headers") or {})
    if channel_type == "email":
        config["has_password"] = bool(fields.get("password"))
    return config


def _store(
    channel: NotificationChannel,
    box: SecretBox,
    policy: OutboundPolicy,
    fields: dict[str, Any],
    secrets: dict[str, Any],
) -> None:
    _validate(channel.type, fields, policy)
    channel.config = _visible_config(channel.type, fields)
    secrets = {**secrets, **{name: fields.get(name) for name in SECRET_FIELDS[channel.type]}}
    channel.secret_encrypted = box.encrypt_json(secrets)


def _fields_of(channel: NotificationChannel, secrets: Mapping[str, Any]) -> dict[str, Any]:
    """The channel's current settings as `create` took them, to apply a partial update onto."""
    fields = {name: channel.config.get(name) for name in VISIBLE_FIELDS[channel.type]}
    fields.update({name: secrets.get(name) for name in SECRET_FIELDS[channel.type]})
    return fields


def _name_taken(session: Session, organization_id: uuid.UUID, name: str, exclude: uuid.UUID | None = None) -> bool:
    stmt = select(NotificationChannel.id).where(
        NotificationChannel.organization_id == organization_id,
        NotificationChannel.name == name,
    )
    if exclude is not None:
        stmt = stmt.where(NotificationChannel.id != exclude)
    return session.scalar(stmt) is not None


def create_channel(
    session: Session,
    access: Access,
    box: SecretBox,
    policy: OutboundPolicy,
    *,
    organization_id: uuid.UUID | None,
    project_id: uuid.UUID | None,
    name: str,
    channel_type: str,
    fields: dict[str, Any],
) -> tuple[NotificationChannel, str | None]:
    """Returns the channel and, for webhooks, the signing secret (shown this once)."""
    org = resolve_organization(access, organization_id, "notifications:write", min_role="admin")
    if project_id is not None:
        access.require_project(project_id, "notifications:write")
    if _name_taken(session, org.id, name):
        raise AlreadyExists(f"Channel '{name}' already exists")
    secrets: dict[str, Any] = {}
    signing_secret = None
    if channel_type == "webhook":
        signing_secret = _check_signing_secret(fields.pop("signing_secret", None) or senders.generate_webhook_secret())
        secrets["signing_secrets"] = [{"secret": signing_secret, "expires_at": None}]
    channel = NotificationChannel(organization_id=org.id, project_id=project_id, name=name, type=channel_type)
    _store(channel, box, policy, fields, secrets)
    session.add(channel)
    session.flush()
    audit.describe(
        session,
        action="notification_channel.create",
        object_type="notification_channel",
        object_id=channel.id,
        organization_id=org.id,
        details={"name": name, "type": channel_type},
    )
    return channel, signing_secret


def get_channel(session: Session, access: Access, channel_id: uuid.UUID, *, write: bool = False) -> NotificationChannel:
    channel = session.get(NotificationChannel, channel_id)
    if channel is None or channel.deleted_at is not None:
        raise NotFound(f"Channel '{channel_id}' does not exist")
    scope = "notifications:write" if write else "notifications:read"
    # Channels hold credentials: changing them is for org admins (reading the safe part is for members).
    access.require_org(channel.organization_id, scope, min_role="admin" if write else None)
    return channel


def list_channels(session: Session, access: Access, request: PageRequest) -> RowPage:
    return page_in_organization(session, access, request, NotificationChannel, NotificationChannel.deleted_at.is_(None))


def update_channel(
    session: Session,
    access: Access,
    box: SecretBox,
    policy: OutboundPolicy,
    channel_id: uuid.UUID,
    changes: dict[str, Any],
) -> NotificationChannel:
    channel = get_channel(session, access, channel_id, write=True)
    if "name" in changes:
        if _name_taken(session, channel.organization_id, changes["name"], exclude=channel.id):
            raise AlreadyExists(f"Channel '{changes['name']}' already exists")
        channel.name = changes.pop("name")
    if "enabled" in changes:
        channel.enabled = changes.pop("enabled")
        if channel.enabled:
            channel.disabled_reason = None
    unknown = set(changes) - set(SECRET_FIELDS[channel.type]) - set(VISIBLE_FIELDS[channel.type])
    if unknown:
        raise InvalidParameter(f"{sorted(unknown)} do not apply to a {channel.type} channel")
    if changes:
        secrets = box.decrypt_json(channel.secret_encrypted) if channel.secret_encrypted else {}
        _store(channel, box, policy, {**_fields_of(channel, secrets), **changes}, secrets)
    session.flush()
    audit.describe(
        session,
        action="notification_channel.update",
        object_type="notification_channel",
        object_id=channel.id,
        organization_id=channel.organization_id,
        # Names of what changed only: values may be secrets.
        details={"fields": sorted(changes)},
    )
    return channel


def rotate_signing_secret(
    session: Session,
    access: Access,
    box: SecretBox,
    channel_id: uuid.UUID,
    *,
    overlap_seconds: int,
    new_secret: str | None,
    now: datetime,
) -> tuple[NotificationChannel, str, datetime]:
    """Sign with a new secret from now on, and also with the old one until the overlap ends, so
    receivers can switch at their pace. Returns the channel, the new secret and when the old expires."""
    channel = get_channel(session, access, channel_id, write=True)
    if channel.type != "webhook":
        raise InvalidParameter("only webhook channels have signing secrets")
    secret = _check_signing_secret(new_secret or senders.generate_webhook_secret())
    secrets = box.decrypt_json(channel.secret_encrypted) if channel.secret_encrypted else {}
    old_expires_at = now + timedelta(seconds=overlap_seconds)
    kept = [
        {"secret": entry["secret"], "expires_at": entry["expires_at"] or old_expires_at.isoformat()}
        for entry in secrets.get("signing_secrets", [])
        if entry["secret"] in senders.active_signing_secrets(secrets, now)
    ]
    secrets["signing_secrets"] = [{"secret": secret, "expires_at": None}, *kept]
    channel.secret_encrypted = box.encrypt_json(secrets)
    channel.updated_at = utcnow()
    session.flush()
    audit.describe(
        session,
        action="notification_channel.rotate_secret",
        object_type="notification_channel",
        object_id=channel.id,
        organization_id=channel.organization_id,
        details={"overlap_seconds": overlap_seconds},
    )
    return channel, secret, old_expires_at


def delete_channel(session: Session, access: Access, channel_id: uuid.UUID) -> NotificationChannel:
    channel = get_channel(session, access, channel_id, write=True)
    channel.deleted_at = utcnow()
    session.flush()
    audit.describe(
        session,
        action="notification_channel.delete",
        object_type="notification_channel",
        object_id=channel.id,
        organization_id=channel.organization_id,
    )
    return channel


def send_test(
    session: Session, access: Access, box: SecretBox, settings: Settings, channel_id: uuid.UUID, now: datetime
) -> Delivery:
    channel = get_channel(session, access, channel_id, write=True)
    notification_id = uuid.uuid4()
    message = build_test_notification(str(notification_id), channel.name, now, settings.public_url)
    session.add(
        Notification(
            id=notification_id,
            organization_id=channel.organization_id,
            group_key=message.group_key,
            kind="test",
            status="firing",
            payload=records.payload_json(message.alerts, group_labels={}, link=message.link, receiver=channel.name),
            created_at=now,
        )
    )
    session.flush()
    row = Delivery(
        id=uuid.uuid4(),
        notification_id=notification_id,
        channel_id=channel.id,
        organization_id=channel.organization_id,
        state="pending",
        attempts=0,
        total_attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(row)
    session.flush()
    # One attempt only: a test reports what happens now; it is not retried.
    retry = attempt_log.RetryPolicy.from_settings(settings.model_copy(update={"notifier_max_attempts": 1}))
    [claimed] = dispatch.claim(session, [row.id], box, retry, now)
    result = dispatch.send(claimed, settings, now)
    audit.describe(
        session,
        action="notification_channel.test",
        object_type="notification_channel",
        object_id=channel.id,
        organization_id=channel.organization_id,
        details={"outcome": str(result.outcome), "status_code": result.status_code},
    )
    attempt_log.record(session, [(claimed, result)], started_at=now, retry=retry, now=now)
    return session.get_one(Delivery, row.id, populate_existing=True)
