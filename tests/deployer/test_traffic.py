"""What a deployment served, per role and version, as its traffic split shows it (GET .../traffic)."""

from __future__ import annotations

import pytest

from services.deployer.domain.canary import TrafficTally
from shared.db.models import Deployment
from tests.deployer.test_api import make_version


def test_a_tally_counts_requests_errors_and_latency():
    tally = TrafficTally()
    assert tally.snapshot().requests == 0 and tally.snapshot().p95_latency_ms is None
    for latency in range(1, 101):
        tally.record(float(latency), error=latency > 90)
    counts = tally.snapshot()
    assert (counts.requests, counts.errors) == (100, 10)
    assert counts.mean_latency_ms == pytest.approx(50.5)
    assert counts.p95_latency_ms == pytest.approx(95.05)


def test_traffic_is_a_page_for_whoever_can_read_the_deployment(client, db_session, tenant, other_tenant):
    version = make_version(db_session, tenant.project_id)
    deployment = Deployment(project_id=tenant.project_id, name="d", model_version_id=version.id, config={})
    db_session.add(deployment)
    db_session.flush()
    mine = client.get(f"/api/v1/deployments/{deployment.id}/traffic", headers=tenant.headers)
    assert mine.status_code == 200 and mine.json() == {"items": [], "next_page_token": None}
    theirs = client.get(f"/api/v1/deployments/{deployment.id}/traffic", headers=other_tenant.headers)
    assert theirs.status_code == 404
