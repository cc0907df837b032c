"""Fuzzing the OpenAPI document of all five services at once (the all-in-one app serves every route):
whatever the schema allows, the server answers without a 5xx, with a documented status, and with a body
its documented schema describes.

Property-based, with schemathesis generating valid requests (the ones that get past validation into the
domain code, where the 5xx hide), plus a deterministic sweep of malformed bodies over every operation
that takes one. Bounded and derandomized so CI runs are fast and reproducible.

The app runs against the test's rolled-back transaction, authenticated with an all-scopes API key of a
real tenant, so generated requests reach the domain rather than stopping at 401.
"""

from __future__ import annotations

import collections
import re
import time
import uuid

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.errors import SerializationNotPossible
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tessera.platform import create_app
from tests.conftest import in_test_transaction

EXAMPLES_PER_OPERATION = 5
# Past this many seconds, the remaining operations get one example each: all are still exercised, and
# the run stays bounded however many routes the services grow.
RUN_BUDGET_S = 120
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
# Operations known to fail a check, skipped until their owner fixes them: {"METHOD /path": "owner: why"}.
KNOWN_BROKEN: dict[str, str] = {}
MALFORMED_BODIES = (b"{", b"[]", b'"text"', b"\xff\xfe")

# Binary uploads (the monitor's Parquet predictions) get arbitrary bytes, as any other binary body.
schemathesis.serializer.alias("application/vnd.apache.parquet", "application/octet-stream")


@pytest.fixture
def fuzzed_app(settings, db_session, tenant):
    # Fuzzed bodies are small; a tight limit keeps a generated giant upload from slowing the run.
    app = in_test_transaction(create_app(settings.model_copy(update={"max_request_bytes": 1024 * 1024})), db_session)
    return app, {"Authorization": f"Bearer {tenant.api_key}"}, tenant


def test_generated_requests_are_answered_as_documented(fuzzed_app):
    app, auth, tenant = fuzzed_app
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # Real ids where a path names the tenant's organization or project, so requests reach live objects
    # (except deletes, which would leave nothing for the operations after them).
    known_ids = {"org_id": str(tenant.org_id), "project_id": str(tenant.project_id)}
    failures: list[str] = []
    statuses: collections.Counter[int] = collections.Counter()
    refused: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {operation.label for operation in operations}
    fuzzed = 0
    # One in-process client for the whole run: a client per request would start a portal thread each time.
    with asgi.get_client(app) as client:
        for operation in operations:
            # The MLflow UI's /ajax-api/ prefix mounts the very handlers of /api/: fuzz them once.
            if operation.label.replace(" /ajax-api/", " /api/", 1) in labels - {operation.label}:
                continue
            if operation.label in KNOWN_BROKEN:
                continue
            fuzzed += 1
            examples = EXAMPLES_PER_OPERATION if time.monotonic() - started < RUN_BUDGET_S else 1
            ids = {} if operation.method.upper() == "DELETE" else known_ids
            path_ids = {name: value for name, value in ids.items() if "{" + name + "}" in operation.path}
            seen: list[int] = []
            failure = _fuzz(operation, examples, path_ids, client, auth, seen)
            statuses.update(seen)
            # A valid request refused as invalid means the schema allowed more than the server takes.
            refused[operation.label] += sum(status in (400, 422) for status in seen)
            if failure:
                failures.append(failure)
    sent = sum(statuses.values())
    rejected = sum(refused.values())
    print(
        f"\n{fuzzed} operations, {sent} requests in {time.monotonic() - started:.0f} s; statuses {dict(statuses)}; "
        f"refused as invalid: {rejected} ({100 * rejected / max(sent, 1):.1f}%): "
        + ", ".join(f"{label} {n}" for label, n in refused.most_common() if n)
    )
    assert not failures, f"{len(failures)} operations failed a check:\n" + "\n".join(failures)


def _fuzz(operation, examples: int, path_ids: dict, client, auth: dict, seen: list[int]) -> str | None:
    """None, or which checks this operation failed (each distinct failure once; all examples are sent)."""
    found: dict[str, str] = {}

    @given(case=operation.as_strategy(path_parameters=path_ids or None))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        response = case.call(session=client, headers=auth)
        seen.append(response.status_code)
        try:
            case.validate_response(response, checks=CHECKS, headers=auth)
        except FailureGroup as group:
            for failure in group.exceptions:
                found.setdefault(f"{failure.title} ({response.status_code})", failure.message.strip()[:400])

    try:
        run()
    except (Unsatisfiable, SerializationNotPossible):  # no request can be made from the schema: nothing to send
        return None
    except Exception as exc:  # a crash of the app is a finding too
        found[type(exc).__name__] = str(exc).strip()[:600]
    if not found:
        return None
    return f"- {operation.label}: " + "; ".join(f"{title}: {message}" for title, message in found.items())


def test_malformed_bodies_get_4xx(fuzzed_app):
    """Truncated JSON, the wrong JSON type, and bytes that are not UTF-8, to every operation with a body."""
    app, auth, _ = fuzzed_app
    failures = []
    with TestClient(app, raise_server_exceptions=False) as client:
        for path, operations in app.openapi()["paths"].items():
            url = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
            for method, spec in operations.items():
                if "requestBody" not in spec or f"{method.upper()} {path}" in KNOWN_BROKEN:
                    continue
                for body in MALFORMED_BODIES:
                    headers = {**auth, "content-type": "application/json"}
                    response = client.request(method.upper(), url, content=body, headers=headers)
                    if response.status_code >= 500:
                        failures.append(f"- {method.upper()} {path} with {body!r}: {response.status_code}")
    assert not failures, "malformed bodies answered 5xx:\n" + "\n".join(failures)
