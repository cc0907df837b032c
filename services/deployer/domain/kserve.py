"""The KServe target: render an InferenceService manifest for a model version and validate it offline.

Validation uses our own JSON schema (`services/deployer/kserve/inferenceservice.schema.json`), written from
KServe's v1beta1 API: no PyPI package ships the CRD, and the CRD alone would let typos through. On top of
the schema come the admission-webhook checks that JSON Schema cannot say (minReplicas <= maxReplicas).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any, Literal

import jsonschema
import yaml

from shared.core.errors import InvalidParameter

API_VERSION = "serving.kserve.io/v1beta1"
MANAGED_BY_LABEL = ("app.kubernetes.io/managed-by", "tessera")
MODEL_LABEL = "tessera.dev/model"
MODEL_VERSION_LABEL = "tessera.dev/model-version"
PREDICTOR_IMPLEMENTATIONS = (
    "model",
    "sklearn",
    "xgboost",
    "tensorflow",
    "pytorch",
    "triton",
    "onnx",
    "huggingface",
    "pmml",
    "lightgbm",
    "paddle",
    "containers",
)
_NOT_DNS_LABEL_CHARS = re.compile(r"[^a-z0-9-]+")
_NOT_LABEL_VALUE_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


class InvalidManifest(InvalidParameter):
    """The manifest would be rejected by the cluster; `problems` lists every reason, one per entry."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            "InferenceService manifest is invalid:\n" + "\n".join(f"- {problem}" for problem in problems),
            details={"problems": problems},
        )
        self.problems = problems


def render_inference_service(
    *,
    name: str,
    storage_uri: str,
    model_name: str,
    model_version: str,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    requests: Mapping[str, str | int] | None = None,
    limits: Mapping[str, str | int] | None = None,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    canary_traffic_percent: int | None = None,
    service_account_name: str | None = None,
    runtime: str | None = None,
) -> dict[str, Any]:
    """An InferenceService serving `storage_uri` (an MLflow model directory) over the V2 protocol.

    For a canary, render the *new* version with `canary_traffic_percent`: KServe keeps the last fully
    rolled-out revision for the remaining traffic.
    """
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = {
        MANAGED_BY_LABEL[0]: MANAGED_BY_LABEL[1],
        MODEL_LABEL: label_value(model_name),
        MODEL_VERSION_LABEL: label_value(model_version),
        **(labels or {}),
    }
    if annotations:
        metadata["annotations"] = dict(annotations)

    model: dict[str, Any] = {"modelFormat": {"name": "mlflow"}, "protocolVersion": "v2", "storageUri": storage_uri}
    if runtime is not None:
        model["runtime"] = runtime
    resources_spec = {key: dict(values) for key, values in (("requests", requests), ("limits", limits)) if values}
    if resources_spec:
        model["resources"] = resources_spec

    predictor: dict[str, Any] = {"model": model}
    optional_fields = (
        ("minReplicas", min_replicas),
        ("maxReplicas", max_replicas),
        ("canaryTrafficPercent", canary_traffic_percent),
        ("serviceAccountName", service_account_name),
    )
    predictor.update({key: value for key, value in optional_fields if value is not None})
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {"predictor": predictor},
    }


def validate_inference_service(manifest: Mapping[str, Any]) -> None:
    """Raise InvalidManifest listing every problem; return None when the cluster would accept it."""
    problems = [_describe(error) for error in sorted(_validator().iter_errors(manifest), key=_error_sort_key)]
    predictor = manifest.get("spec", {}).get("predictor", {}) if isinstance(manifest.get("spec"), dict) else {}
    if isinstance(predictor, dict):
        min_replicas, max_replicas = predictor.get("minReplicas"), predictor.get("maxReplicas")
        # KServe treats maxReplicas 0 as "no upper bound".
        if isinstance(min_replicas, int) and isinstance(max_replicas, int) and 0 < max_replicas < min_replicas:
            problems.append(
                f"spec.predictor: minReplicas ({min_replicas}) cannot be greater than maxReplicas ({max_replicas})"
            )
    if problems:
        raise InvalidManifest(problems)


def dump_manifest(manifest: Mapping[str, Any], fmt: Literal["yaml", "json"] = "yaml") -> str:
    """Text for `kubectl apply -f -`; key order kept as rendered (apiVersion, kind, metadata, spec)."""
    if fmt == "json":
        return json.dumps(manifest, indent=2) + "\n"
    return yaml.safe_dump(dict(manifest), sort_keys=False, default_flow_style=False)


def dns1035_name(text: str, max_length: int = 63) -> str:
    """A valid InferenceService name derived from a free-form deployment name ('My Model v2' -> 'my-model-v2')."""
    name = _NOT_DNS_LABEL_CHARS.sub("-", text.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"m-{name}"
    return name[:max_length].rstrip("-")


def label_value(text: str) -> str:
    """Kubernetes label values: at most 63 of [A-Za-z0-9_.-], alphanumeric at both ends."""
    return _NOT_LABEL_VALUE_CHARS.sub("-", text)[:63].strip("-_.")


@cache
def _validator() -> jsonschema.Draft202012Validator:
    schema_text = resources.files("services.deployer.kserve").joinpath("inferenceservice.schema.json").read_text()
    return jsonschema.Draft202012Validator(json.loads(schema_text))


def _error_sort_key(error: jsonschema.ValidationError) -> tuple[str, str]:
    return (_json_path(error.absolute_path), error.message)


def _json_path(path: Any) -> str:
    parts = [f"[{part}]" if isinstance(part, int) else f".{part}" for part in path]
    return "".join(parts).lstrip(".") or "(root)"


def _describe(error: jsonschema.ValidationError) -> str:
    location = _json_path(error.absolute_path)
    if error.validator == "oneOf" and location == "spec.predictor" and isinstance(error.instance, dict):
        present = [key for key in PREDICTOR_IMPLEMENTATIONS if key in error.instance]
        if present:
            return f"{location}: exactly one predictor implementation is allowed, found {len(present)}: {present}"
        return f"{location}: a predictor implementation is required, one of {list(PREDICTOR_IMPLEMENTATIONS)}"
    if location == "metadata.name" and error.validator in ("pattern", "maxLength"):
        return (
            f"{location}: {error.instance!r} is not a DNS-1035 label (lowercase letters, digits and '-', "
            "starting with a letter, ending alphanumeric, at most 63 characters)"
        )
    if error.validator == "additionalProperties":
        return f"{location}: {error.message} (unknown field; check the spelling)"
    return f"{location}: {error.message}"
