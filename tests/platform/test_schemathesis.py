"""Fuzzing every service's OpenAPI schema: whatever the request, no operation may answer with a 5xx.

Property-based, with schemathesis generating valid requests (the ones that get past validation into the
domain code, where the 5xx hide), plus a deterministic sweep of malformed bodies over every operation
that takes one. Bounded and derandomized so CI runs are fast and reproducible.

Each service app runs against the test's rolled-back transaction, authenticated with an all-scopes API
key of a real tenant, so generated requests reach the domain rather than stopping at 401.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.errors import SerializationNotPossible
from schemathesis.python import asgi

from tessera.platform import SERVICES, create_service_app

EXAMPLES_PER_OPERATION = 3
# Past this many seconds on one service, the remaining operations get one example each: all are still
# exercised, and the file stays well under 90 s however many routes the services grow.
SERVICE_BUDGET_S = 20
# Operations known to answer 5xx, skipped until their owner fixes them: {(service, "METHOD /path"): "owner: why"}.
KNOWN_BROKEN: dict[tuple[str, str], str] = {}
MALFORMED_BODIES = (b"{", b"[]", b'"text"', b"\xff\xfe")

# Binary uploads (the monitor's Parquet predictions) get arbitrary bytes, as any other binary body.
schemathesis.serializer.alias("application/vnd.apache.parquet", "application/octet-stream")


@pytest.fixture
def fuzzed_app(request, settings, db_session, tenant):
    # Fuzzed bodies are small; a tight limit keeps a generated giant upload from slowing the run.
    app = create_service_app(request.param, settings.model_copy(update={"max_request_bytes": 1024 * 1024}))
    app.state.db = db_session.info["tx_db"]
    return request.param, app, {"Authorization": f"Bearer {tenant.api_key}"}, tenant


@pytest.mark.parametrize("fuzzed_app", SERVICES, indirect=True)
def test_generated_requests_get_no_5xx(fuzzed_app):
    service, app, auth, tenant = fuzzed_app
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # Real ids where a path names the tenant's organization or project, so requests reach live objects
    # (except deletes, which would leave nothing for the operations after them).
    known_ids = {"org_id": str(tenant.org_id), "project_id": str(tenant.project_id)}
    failures: list[str] = []
    started = time.monotonic()
    # One in-process client for the whole run: a client per request would start a portal thread each time.
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {operation.label for operation in operations}
    with asgi.get_client(app) as client:
        for operation in operations:
            # The MLflow UI's /ajax-api/ prefix mounts the very handlers of /api/: fuzz them once.
            if operation.label.replace(" /ajax-api/", " /api/", 1) in labels - {operation.label}:
                continue
            if (service, operation.label) not in KNOWN_BROKEN:
                examples = EXAMPLES_PER_OPERATION if time.monotonic() - started < SERVICE_BUDGET_S else 1
                ids = {} if operation.method.upper() == "DELETE" else known_ids
                path_ids = {name: value for name, value in ids.items() if "{" + name + "}" in operation.path}
                failure = _fuzz(operation, examples, path_ids, client, auth)
                if failure:
                    failures.append(failure)
    assert not failures, f"{service}: {len(failures)} operations answered 5xx:\n" + "\n".join(failures)


def _fuzz(operation, examples: int, path_ids: dict, client, auth: dict) -> str | None:
    """None, or how the first 5xx of this operation came about."""

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
        case.validate_response(response, checks=[not_a_server_error], headers=auth)

    try:
        run()
    except (Unsatisfiable, SerializationNotPossible):  # no request can be made from the schema: nothing to send
        return None
    except Exception as exc:  # a failed check or a crash of the app: both are findings
        return f"- {operation.label}: {type(exc).__name__}: {str(exc).strip()[:600]}"
    return None


@pytest.mark.parametrize("fuzzed_app", SERVICES, indirect=True)
def test_malformed_bodies_get_4xx(fuzzed_app):
    """Truncated JSON, the wrong JSON type, and bytes that are not UTF-8, to every operation with a body."""
    service, app, auth, _ = fuzzed_app
    failures = []
    with TestClient(app, raise_server_exceptions=False) as client:
        for path, operations in app.openapi()["paths"].items():
            url = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
            for method, spec in operations.items():
                if "requestBody" not in spec or (service, f"{method.upper()} {path}") in KNOWN_BROKEN:
                    continue
                for body in MALFORMED_BODIES:
                    headers = {**auth, "content-type": "application/json"}
                    response = client.request(method.upper(), url, content=body, headers=headers)
                    if response.status_code >= 500:
                        failures.append(f"- {method.upper()} {path} with {body!r}: {response.status_code}")
    assert not failures, f"{service}: malformed bodies answered 5xx:\n" + "\n".join(failures)
