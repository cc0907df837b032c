"""Identifier formats the mlflow client sees.

Experiments and runs are UUIDs shown as 32 lower-case hex digits (the shape of MLflow's own run ids;
the client treats experiment ids as opaque strings, so they need not be integers). Logged models are
shown as `m-<hex>` as MLflow 3 does. Experiment "0" is the client's "no experiment set": it means the
caller's default project's experiment named "Default".
"""

from __future__ import annotations

import uuid

from shared.core.errors import InvalidParameter, NotFound

DEFAULT_EXPERIMENT_ID = "0"
DEFAULT_EXPERIMENT_NAME = "Default"
LOGGED_MODEL_PREFIX = "m-"


def parse_uuid(value: str | None, what: str) -> uuid.UUID:
    """A client-supplied id; a malformed one names nothing, so it is reported missing like MLflow does."""
    if not value:
        raise InvalidParameter(f"Missing value for required parameter '{what}'")
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"No {what.replace('_', ' ')} '{value}' exists") from None


def parse_model_id(value: str | None) -> uuid.UUID:
    if value and value.startswith(LOGGED_MODEL_PREFIX):
        value = value[len(LOGGED_MODEL_PREFIX) :]
    return parse_uuid(value, "model_id")


def format_model_id(model_id: uuid.UUID) -> str:
    return f"{LOGGED_MODEL_PREFIX}{model_id.hex}"
