"""All configuration, from environment variables prefixed TESSERA_ (pydantic-settings).

With nothing set, Tessera runs embedded: a SQLite file, a local artifact folder and a Celery broker
on the file system, all under TESSERA_DATA_DIR. Point TESSERA_DATABASE_URL at PostgreSQL and
TESSERA_BROKER_URL at Redis for the production shape; no code changes.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "TESSERA_"


class InvalidSettings(ValueError):
    """A setting's value is unusable; the message is one line naming the variable and what it expects."""


def _list_of_strings(value: Any) -> Any:
    """A list setting as people type it: a JSON list (`["a", "b"]`) or comma-separated (`a,b`)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith(("[", "{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("expected a JSON list of strings or comma-separated values") from None
    return [item.strip() for item in text.split(",") if item.strip()]


# Every list setting is this type, so each accepts both spellings. NoDecode stops pydantic-settings from
# insisting on JSON before the validator sees the text.
ListSetting = Annotated[list[str], NoDecode, BeforeValidator(_list_of_strings)]

_HOSTNAME_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_HOSTNAME_LABEL}(\.{_HOSTNAME_LABEL})*\.?$")


def _outbound_entries(entries: list[str]) -> list[str]:
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if "/" in entry or not _HOSTNAME.match(entry.lower()):
                raise ValueError(
                    f"{entry!r} is neither an IP address, a CIDR network (10.0.0.0/8) nor a host name"
                ) from None
    return entries


def _fernet_keys(keys: list[str]) -> list[str]:
    from cryptography.fernet import Fernet

    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:
            # Never echo the value: it is a secret.
            raise ValueError(f"key {position} is not a Fernet key (32 url-safe base64-encoded bytes)") from None
    return keys


def _persistent_secret(data_dir: Path, name: str, make: Callable[[], str]) -> str:
    """A secret generated once and kept in the data dir, so restarts don't log everyone out."""
    path = data_dir / name
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = make()
    path.write_text(value)
    path.chmod(0o600)
    return value


def listening_url(host: str, port: int) -> str:
    """The URL a client on this machine reaches an API listening on host:port by (a wildcard address
    listens on loopback too)."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    environment: str = "development"
    data_dir: Path = Path(".tessera")
    database_url: str = ""
    broker_url: str = ""
    # Celery key prefix on Redis, so several Tessera installations (or test sessions) share one Redis.
    broker_key_prefix: str = ""
    artifact_root: str = ""
    # For S3-compatible servers (MinIO...) when artifact_root is s3://; empty = AWS itself.
    artifact_s3_endpoint_url: str = ""
    # Where the API listens (`tessera up` / `serve` options default to these), and the base URL of every
    # link Tessera hands out (alerts, notifications, webhooks): the listening address unless set.
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""

    # Identity
    jwt_secret: str = ""
    jwt_ttl_s: int = 3600
    # Fernet keys for channel secrets at rest; the first encrypts, all decrypt (rotation).
    encryption_keys: Annotated[ListSetting, AfterValidator(_fernet_keys)] = Field(default_factory=list)
    api_key_touch_interval_s: int = 60
    # Browser sign-in (/login): how long a session cookie lasts, and how many failed attempts an email or a
    # client address may make per window before /login answers 429.
    session_ttl_s: int = 12 * 3600
    login_max_failures: int = 10
    login_failure_window_s: int = 300
    # Anyone may create an account with POST /api/v1/users (a fresh platform needs its first user);
    # set false to allow only org admins adding people to their organization.
    signup_open: bool = True

    # Requests
    max_request_bytes: int = 64 * 1024 * 1024
    log_level: str = "INFO"
    log_json: bool = False
    sql_echo: bool = False
    db_pool_size: int = 10

    # Published outbox events are deleted after this many days (beat prunes hourly); at least 2, past
    # the notifier's one-day search for events whose messages were lost.
    outbox_retention_days: int = Field(default=7, ge=2)

    # Batch consumers (events, deliveries, groups): an item that fails on its own is retried alone after
    # quarantine_retry_base_s (doubling), and after quarantine_max_attempts failures it is quarantined
    # until replayed through the API.
    quarantine_max_attempts: int = Field(default=5, ge=1)
    quarantine_retry_base_s: float = Field(default=5.0, ge=0)

    # Outbound HTTP (webhooks, Slack): addresses allowed even though private/loopback.
    # IPs, CIDRs or host names, e.g. `127.0.0.1,10.0.0.0/8,hooks.internal` (or the same as a JSON list).
    outbound_allowlist: Annotated[ListSetting, AfterValidator(_outbound_entries)] = Field(default_factory=list)

    # Notifier: beat ticks (group timers, retry sweeper) and the delivery retry policy.
    notifier_flush_interval_s: float = 1.0
    notifier_sweep_interval_s: float = 5.0
    # An in-flight delivery whose worker vanished is retried after this lease (> the send timeout).
    notifier_lease_s: float = 120.0
    # A queued message not picked up within this time (lost with a broker restart) is queued again.
    notifier_requeue_after_s: float = 60.0
    notifier_backoff_base_s: float = 10.0
    notifier_backoff_cap_s: float = 1800.0
    notifier_max_attempts: int = 8
    # Alerts posted to the Alertmanager API without an end time resolve this long after their last post
    # (Alertmanager's resolve_timeout).
    notifier_resolve_timeout_s: float = 300.0

    # Deployer: supervision tick, model-server start-up limit, the gateway's routing cache and its
    # prediction log (batches queued in the database for the deployment's linked monitor).
    deployer_supervise_interval_s: float = 10.0
    deployer_ready_timeout_s: float = 60.0
    # How long installing a model's own requirements may take (its environment is built once and cached).
    deployer_env_build_timeout_s: float = 600.0
    deployer_route_ttl_s: float = 2.0
    # How often each gateway process adds its counts to the shared rollout state and judges canaries on it.
    deployer_state_flush_interval_s: float = 0.25
    deployer_log_batch_size: int = 200
    deployer_log_flush_interval_s: float = 1.0

    # Tracking: metric ingest (log-metric and log-batch requests) commits without waiting for PostgreSQL
    # to flush its write-ahead log (`SET LOCAL synchronous_commit = off` for those transactions only),
    # which saves the fsync of every commit. Durability bound: if the PostgreSQL server itself crashes
    # (not Tessera, not the client), requests of this kind acknowledged in the last ~3 x wal_writer_delay
    # (600 ms by default) may be lost, whole transactions at a time (their params, tags and audit rows
    # with them); the database stays consistent and every other request keeps durable commits.
    tracking_async_metric_commit: bool = False

    # Monitor: how often beat looks for due checks; a check still queued this long after it was sent
    # (message lost with a broker restart) is sent again; a running check older than the lease is retaken.
    monitor_schedule_interval_s: float = 5.0
    # How often beat has queued served predictions logged to their deployments' monitors.
    monitor_ingest_interval_s: float = 2.0
    monitor_requeue_after_s: float = 60.0
    monitor_check_lease_s: float = 900.0
    # Upkeep of logged predictions: how often beat runs compaction, retention and the orphan sweep; how
    # long rows are kept unless a monitor sets its own `retention_days`; the size small files of a day
    # are merged into; how long an unindexed file may still be waiting for its index row's commit.
    monitor_maintenance_interval_s: float = 600.0
    monitor_retention_days: int = 30
    monitor_compaction_target_rows: int = 1_000_000
    monitor_orphan_grace_s: float = 3600.0
    # Drift checks and `tessera drift` read the data a group of columns at a time so that the process's
    # resident memory stays within this many MB, whatever the size of the data (one column's working set,
    # about 6 x 8 bytes x rows, is the floor). The default leaves room for a 2 GB peak.
    monitor_drift_memory_mb: int = Field(default=1792, ge=64)
    # A check of more columns than this, or whose window is larger than the memory bound, is split into
    # column shards run as separate tasks on any of the workers (0: never split).
    monitor_check_shard_columns: int = Field(default=25, ge=0)
    # Threads a check (or shard) works on columns with; 0: one per core, up to 4. With several worker
    # processes on one machine, 1 leaves the cores to the processes.
    monitor_drift_threads: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _embedded_defaults(self) -> Settings:
        data_dir = self.data_dir.resolve()
        self.data_dir = data_dir
        if not self.database_url:
            self.database_url = f"sqlite:///{data_dir / 'tessera.db'}"
        if not self.public_url:
            self.public_url = listening_url(self.host, self.port)
        if not self.broker_url:
            self.broker_url = "filesystem://"
        if not self.artifact_root:
            self.artifact_root = str(data_dir / "artifacts")
        if not self.jwt_secret:
            self.jwt_secret = _persistent_secret(data_dir, "jwt.secret", lambda: secrets.token_urlsafe(48))
        if not self.encryption_keys:
            from cryptography.fernet import Fernet

            self.encryption_keys = [_persistent_secret(data_dir, "fernet.key", lambda: Fernet.generate_key().decode())]
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def broker_folder(self) -> Path:
        return self.data_dir / "broker"


def describe_invalid(exc: ValidationError) -> str:
    """One line for a person: which variables are wrong and what each expects (values are not echoed:
    some are secrets)."""
    problems = []
    for error in exc.errors():
        field, *position = error["loc"] or ("settings",)
        where = f"{ENV_PREFIX}{str(field).upper()}"
        if position:
            where += f" (item {int(position[0]) + 1})" if isinstance(position[0], int) else f" ({position[0]})"
        problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "Invalid setting " + "; ".join(problems)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment; InvalidSettings (one line) instead of pydantic's report."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise InvalidSettings(describe_invalid(exc)) from None


@lru_cache
def get_settings() -> Settings:
    return load_settings()
