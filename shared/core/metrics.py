"""The process's Prometheus registry, served at /metrics: in a module of its own, so domain code counts
what it does without importing the web layer."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

REGISTRY = CollectorRegistry()
