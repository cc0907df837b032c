"""KServe InferenceService manifests: rendering, strict offline validation, dumping."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from services.deployer.domain.kserve import (
    InvalidManifest,
    dns1035_name,
    dump_manifest,
    render_inference_service,
    validate_inference_service,
)


def _render(**overrides):
    arguments = {
        "name": "iris-classifier",
        "namespace": "models",
        "storage_uri": "s3://tessera-artifacts/1/abc123/artifacts/model",
        "model_name": "iris classifier",
        "model_version": "3",
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": 1, "memory": "2Gi"},
        "min_replicas": 1,
        "max_replicas": 4,
        "service_account_name": "model-reader",
    }
    return render_inference_service(**(arguments | overrides))


def _problems(manifest) -> list[str]:
    with pytest.raises(InvalidManifest) as failure:
        validate_inference_service(manifest)
    return failure.value.problems


def test_rendered_manifest_has_the_kserve_shape_and_validates():
    manifest = _render()

    validate_inference_service(manifest)
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1"
    assert manifest["kind"] == "InferenceService"
    assert manifest["metadata"]["labels"]["tessera.dev/model"] == "iris-classifier"
    predictor = manifest["spec"]["predictor"]
    assert predictor["model"] == {
        "modelFormat": {"name": "mlflow"},
        "protocolVersion": "v2",
        "storageUri": "s3://tessera-artifacts/1/abc123/artifacts/model",
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 1, "memory": "2Gi"}},
    }
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 4)
    assert "canaryTrafficPercent" not in predictor


def test_canary_manifest_validates():
    manifest = _render(canary_traffic_percent=20, annotations={"tessera.dev/deployment-id": "d-1"})

    validate_inference_service(manifest)
    assert manifest["spec"]["predictor"]["canaryTrafficPercent"] == 20


def test_minimal_manifest_validates():
    validate_inference_service(
        render_inference_service(name="m", storage_uri="gs://b/m", model_name="m", model_version="1")
    )


def test_typo_in_a_field_is_caught():
    manifest = _render()
    manifest["spec"]["predictor"]["model"]["storageURI"] = manifest["spec"]["predictor"]["model"].pop("storageUri")
    manifest["spec"]["predictor"]["minReplica"] = 2

    problems = _problems(manifest)

    assert any("'storageURI' was unexpected" in problem for problem in problems)
    assert any("'minReplica' was unexpected" in problem for problem in problems)
    assert any("'storageUri' is a required property" in problem for problem in problems)


def test_two_predictor_implementations_are_rejected():
    manifest = _render()
    manifest["spec"]["predictor"]["sklearn"] = {"storageUri": "gs://b/m"}

    assert _problems(manifest) == [
        "spec.predictor: exactly one predictor implementation is allowed, found 2: ['model', 'sklearn']"
    ]


def test_model_plus_custom_containers_is_also_two_implementations():
    manifest = _render()
    manifest["spec"]["predictor"]["containers"] = [{"name": "kserve-container", "image": "example/server:1"}]

    assert "found 2: ['model', 'containers']" in _problems(manifest)[0]


def test_a_predictor_with_no_implementation_is_rejected():
    manifest = _render()
    del manifest["spec"]["predictor"]["model"]

    assert "a predictor implementation is required" in _problems(manifest)[0]


@pytest.mark.parametrize("percent", [150, -1])
def test_canary_percent_outside_0_to_100_is_rejected(percent):
    problems = _problems(_render(canary_traffic_percent=percent))

    assert len(problems) == 1
    assert problems[0].startswith("spec.predictor.canaryTrafficPercent:")


@pytest.mark.parametrize("name", ["Iris", "1iris", "iris_classifier", "iris-", "a" * 64])
def test_name_must_be_a_dns_1035_label(name):
    problems = _problems(_render(name=name))

    assert problems == [
        f"metadata.name: {name!r} is not a DNS-1035 label (lowercase letters, digits and '-', "
        "starting with a letter, ending alphanumeric, at most 63 characters)"
    ]


def test_webhook_replica_bounds_and_schema_types_are_all_reported_together():
    manifest = _render(min_replicas=5, max_replicas=2)
    manifest["spec"]["predictor"]["model"]["protocolVersion"] = "v3"
    manifest["spec"]["predictor"]["model"]["resources"]["limits"]["memory"] = "two gigs"

    problems = _problems(manifest)

    assert len(problems) == 3
    assert "minReplicas (5) cannot be greater than maxReplicas (2)" in problems[-1]
    assert any(problem.startswith("spec.predictor.model.protocolVersion:") for problem in problems)
    assert any(problem.startswith("spec.predictor.model.resources.limits.memory:") for problem in problems)


def test_invalid_manifest_is_a_400_with_the_problem_list():
    manifest = _render(canary_traffic_percent=150)

    with pytest.raises(InvalidManifest) as failure:
        validate_inference_service(manifest)

    assert failure.value.status_code == 400
    assert failure.value.to_dict()["details"]["problems"] == failure.value.problems


def test_dump_round_trips_through_yaml_and_json():
    manifest = _render(canary_traffic_percent=10)

    as_yaml = dump_manifest(manifest)
    as_json = dump_manifest(manifest, "json")

    assert as_yaml.startswith("apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\n")
    assert yaml.safe_load(as_yaml) == manifest
    assert json.loads(as_json) == manifest


def test_rendering_does_not_share_caller_mappings():
    labels = {"team": "fraud"}
    manifest = _render(labels=labels)
    pristine = copy.deepcopy(manifest)

    labels["team"] = "changed"

    assert manifest == pristine


@pytest.mark.parametrize(
    ("text", "expected"),
    [("My Model v2", "my-model-v2"), ("2fast", "m-2fast"), ("__", "m"), ("x" * 80, "x" * 63)],
)
def test_dns1035_name_derives_valid_names(text, expected):
    name = dns1035_name(text)

    assert name == expected
    validate_inference_service(
        render_inference_service(name=name, storage_uri="s3://b", model_name="m", model_version="1")
    )
