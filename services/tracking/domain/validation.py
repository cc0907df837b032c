"""MLflow's limits and naming rules for what runs log (mlflow/utils/validation.py), enforced server-side
so that a request is rejected as a whole before anything is written."""

from __future__ import annotations

import math
import posixpath
import re

from shared.core.errors import InvalidParameter

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_EXPERIMENT_TAG_VALUE_LENGTH = 20000
MAX_KEY_LENGTH = 250
MAX_EXPERIMENT_NAME_LENGTH = 500
MAX_DATASET_NAME_LENGTH = 500
MAX_DATASET_DIGEST_LENGTH = 36
MAX_DATASETS_PER_REQUEST = 1000
MAX_INPUT_TAG_KEY_LENGTH = 255
MAX_INPUT_TAG_VALUE_LENGTH = 500
MAX_RESULTS_THRESHOLD = 50000

_KEY_RE = re.compile(r"^[/\w.\- :]*$")


def validate_key(key: object, what: str) -> str:
    """Metric/param/tag names: the characters MLflow allows, no path tricks (they become file names
    in some stores), at most 250 characters."""
    if not isinstance(key, str) or key == "":
        raise InvalidParameter(f"Invalid {what} name: a key name must be provided")
    if not _KEY_RE.match(key):
        raise InvalidParameter(
            f"Invalid {what} name: '{key}'. Names may only contain alphanumerics, underscores (_), "
            "dashes (-), periods (.), spaces ( ), colon(:) and slashes (/)."
        )
    normalized = posixpath.normpath(key)
    if normalized != key or normalized == "." or normalized.startswith(("..", "/")):
        raise InvalidParameter(
            f"Invalid {what} name: '{key}'. Names may be treated as files in certain cases, and must "
            f"not resolve to other names when treated as such. This name would resolve to '{normalized}'"
        )
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidParameter(
            f"{what.capitalize()} name '{key[:50]}...' exceeds the maximum length of {MAX_KEY_LENGTH}"
        )
    return key


def validate_value(value: object, what: str, limit: int) -> str:
    if value is None:
        raise InvalidParameter(f"Missing value for required parameter '{what} value'")
    if not isinstance(value, str):
        value = str(value)
    if len(value) > limit:
        raise InvalidParameter(
            f"{what.capitalize()} value exceeds the maximum length of {limit} characters ({len(value)} given)"
        )
    return value


def parse_double(value: object, what: str) -> float:
    """Protobuf JSON doubles: numbers, or the strings "NaN", "Infinity", "-Infinity"."""
    if isinstance(value, bool) or value is None:
        raise InvalidParameter(f"Got invalid value {value!r} for {what}. Please specify a numeric value.")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise InvalidParameter(f"Got invalid value {value!r} for {what}. Please specify a numeric value.")


def parse_int64(value: object, what: str, *, default: int | None = None) -> int:
    """Protobuf JSON int64: a number or a decimal string."""
    if value is None or value == "":
        if default is None:
            raise InvalidParameter(f"Missing value for required parameter '{what}'")
        return default
    if isinstance(value, bool):
        raise InvalidParameter(f"Invalid value {value!r} for parameter '{what}': expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise InvalidParameter(f"Invalid value {value!r} for parameter '{what}': expected an integer")


def validate_batch_sizes(metrics: int, params: int, tags: int) -> None:
    for what, count, limit in (
        ("metrics", metrics, MAX_METRICS_PER_BATCH),
        ("params", params, MAX_PARAMS_TAGS_PER_BATCH),
        ("tags", tags, MAX_PARAMS_TAGS_PER_BATCH),
        ("metrics, params, and tags", metrics + params + tags, MAX_ENTITIES_PER_BATCH),
    ):
        if count > limit:
            raise InvalidParameter(
                f"A batch logging request can contain at most {limit} {what}. Got {count} {what}. "
                "Please split up the request into multiple requests."
            )


def validate_experiment_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidParameter(f"Invalid experiment name: '{name}'")
    if len(name) > MAX_EXPERIMENT_NAME_LENGTH:
        raise InvalidParameter(f"Experiment name exceeds the maximum length of {MAX_EXPERIMENT_NAME_LENGTH}")
    return name


def validate_max_results(value: object, default: int) -> int:
    max_results = parse_int64(value, "max_results", default=default)
    if max_results <= 0 or max_results > MAX_RESULTS_THRESHOLD:
        raise InvalidParameter(
            f"Invalid value {max_results} for parameter 'max_results' supplied. It must be a positive "
            f"integer at most {MAX_RESULTS_THRESHOLD}"
        )
    return max_results
