"""amtool, Alertmanager's own command-line client, pointed at Tessera: it adds and queries alerts, and adds,
queries and expires silences, through Tessera's Alertmanager API v2 (as the mlflow client does for tracking)."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import pytest

from services.notifier.domain.config import rules
from tests.notifier.builders import handle_posted_alerts, owner_access

AMTOOL = shutil.which("amtool")
pytestmark = pytest.mark.skipif(AMTOOL is None, reason="amtool comes with Debian's prometheus-alertmanager")


@pytest.fixture
def amtool(live_server, live_tenant, tmp_path):
    http_config = tmp_path / "http.yml"
    http_config.write_text(json.dumps({"authorization": {"type": "Bearer", "credentials": live_tenant.api_key}}))

    def run(*arguments: str) -> str:
        done = subprocess.run(
            [AMTOOL, f"--alertmanager.url={live_server.url}", f"--http.config.file={http_config}", *arguments],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    return run


def test_amtool_adds_and_queries_alerts_and_silences(amtool, live_tenant, db):
    name = f"Amtool{uuid.uuid4().hex[:6]}"
    with db.session_scope() as session:
        rule = {"name": f"all-{name}", "channel_ids": [], "event_types": ["custom.alertmanager"]}
        rules.create_rule(session, owner_access(session, live_tenant), live_tenant.org_id, rule)
    amtool("alert", "add", f"alertname={name}", "severity=warning", "--annotation=summary=disk almost full")
    with db.session_scope() as session:
        handle_posted_alerts(session, live_tenant.org_id)

    [alert] = json.loads(amtool("alert", "query", f"alertname={name}", "-o", "json"))
    assert alert["labels"]["severity"] == "warning" and alert["annotations"]["summary"] == "disk almost full"
    assert alert["status"]["state"] == "active"

    silence_id = amtool("silence", "add", f"alertname={name}", "--comment=disk replaced", "--duration=1h").strip()
    [silence] = json.loads(amtool("silence", "query", f"alertname={name}", "-o", "json"))
    assert silence["id"] == silence_id and silence["status"]["state"] == "active"
    [alert] = json.loads(amtool("alert", "query", f"alertname={name}", "--silenced", "-o", "json"))
    assert alert["status"]["silencedBy"] == [silence_id]

    amtool("silence", "expire", silence_id)
    assert json.loads(amtool("silence", "query", f"alertname={name}", "-o", "json")) == []
