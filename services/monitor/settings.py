"""The monitor's own settings (TESSERA_MONITOR_*): upkeep of logged predictions."""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class MonitorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TESSERA_MONITOR_", extra="ignore")

    # How often beat runs compaction, retention and the orphan sweep over every monitor's files.
    maintenance_interval_s: float = 600.0
    # Logged predictions are kept this long unless a monitor sets its own `retention_days`.
    retention_days: int = 30
    # Small files of a day are merged into files of up to this many rows; larger files are left alone.
    compaction_target_rows: int = 1_000_000
    # An unindexed file younger than this may still be waiting for its index row's commit.
    orphan_grace_s: float = 3600.0


@lru_cache
def get_monitor_settings() -> MonitorSettings:
    return MonitorSettings()
