"""The tracking service's own settings (TESSERA_TRACKING_*)."""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class TrackingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TESSERA_TRACKING_", extra="ignore")

    # Metric ingest (log-metric and log-batch requests) commits without waiting for PostgreSQL to flush
    # its write-ahead log (`SET LOCAL synchronous_commit = off` for those transactions only), which saves
    # the fsync of every commit (~4 ms on this machine class, most of a single log_metric call).
    # Durability bound: if the PostgreSQL server itself crashes (not Tessera, not the client), requests
    # of this kind acknowledged in the last ~3 x wal_writer_delay (600 ms by default) may be lost, whole
    # transactions at a time (their params, tags and audit rows with them); the database stays consistent
    # and every other request keeps durable commits. Off by default.
    async_metric_commit: bool = False


@lru_cache
def get_tracking_settings() -> TrackingSettings:
    return TrackingSettings()
