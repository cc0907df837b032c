"""The notifier's API on the platform app: channels and their secrets, the test button (and its SSRF
guard), rules and preview, silences and mute windows, the delivery log, redelivery, custom events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from shared.db.models import AuditLog, NotificationChannel, OutboxEvent
from tests.factories import make_member
from tests.notifier.builders import handle_posted_alerts
from tests.notifier.conftest import Receiver, Reply

SLACK_URL = "https://hooks.slack.com/services/T000/B000/very-secret-token"


def _webhook(client, tenant, url: str, **extra):
    body = {"type": "webhook", "name": f"hook-{url[-12:]}", "url": url, **extra}
    response = client.post("/api/v1/channels", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return response.json()


def _verify(secret: str, request) -> dict:
    return Webhook(secret).verify(request.body, request.headers)


def test_channel_secrets_are_encrypted_never_returned_and_never_logged(client, db_session, tenant):
    created = client.post(
        "/api/v1/channels",
        json={"type": "slack", "name": "ml-alerts", "url": SLACK_URL},
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.text
    channel = created.json()
    assert channel["config"] == {"host": "hooks.slack.com"}
    listed = client.get("/api/v1/channels", headers=tenant.headers)
    assert "very-secret-token" not in listed.text and "very-secret-token" not in created.text

    row = db_session.get(NotificationChannel, channel["id"])
    assert "very-secret-token" not in row.secret_encrypted and "very-secret-token" not in str(row.config)
    renamed = client.patch(f"/api/v1/channels/{channel['id']}", json={"url": SLACK_URL + "2"}, headers=tenant.headers)
    assert renamed.status_code == 200
    audit_rows = db_session.scalars(select(AuditLog).where(AuditLog.organization_id == tenant.org_id)).all()
    assert audit_rows and all("very-secret-token" not in str(audit.details) for audit in audit_rows)


def test_webhook_secret_is_shown_once_and_signs_test_messages(client, tenant, receiver: Receiver):
    channel = _webhook(client, tenant, receiver.url(), headers={"X-Team": "ml"})
    secret = channel["signing_secret"]
    assert secret.startswith("whsec_")
    assert channel["config"] == {"host": "127.0.0.1", "header_names": ["X-Team"]}
    assert "signing_secret" not in client.get(f"/api/v1/channels/{channel['id']}", headers=tenant.headers).json()

    result = client.post(f"/api/v1/channels/{channel['id']}/test", headers=tenant.headers)
    assert result.status_code == 200, result.text
    assert result.json()["state"] == "delivered" and result.json()["last_status_code"] == 200
    [request] = receiver.requests
    assert request.headers["x-team"] == "ml"
    assert _verify(secret, request)["alerts"][0]["labels"]["alertname"] == "TesseraTestNotification"

    detail = client.get(f"/api/v1/deliveries/{result.json()['id']}", headers=tenant.headers).json()
    assert [a["outcome"] for a in detail["attempt_log"]] == ["delivered"]


def test_rotation_signs_with_old_and_new_secret_during_the_overlap(client, tenant, receiver: Receiver):
    channel = _webhook(client, tenant, receiver.url())
    old = channel["signing_secret"]
    rotated = client.post(
        f"/api/v1/channels/{channel['id']}/rotate-secret", json={"overlap_seconds": 3600}, headers=tenant.headers
    )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["signing_secret"]
    assert new != old
    assert client.post(f"/api/v1/channels/{channel['id']}/test", headers=tenant.headers).json()["state"] == "delivered"
    request = receiver.requests[-1]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    # Receivers holding either secret verify the same message.
    assert _verify(old, request) == _verify(new, request)

    # A rotation without overlap retires `new` at once; `old` keeps its hour.
    newest = client.post(
        f"/api/v1/channels/{channel['id']}/rotate-secret", json={"overlap_seconds": 0}, headers=tenant.headers
    ).json()["signing_secret"]
    client.post(f"/api/v1/channels/{channel['id']}/test", headers=tenant.headers)
    request = receiver.requests[-1]
    assert _verify(newest, request) and _verify(old, request)
    with pytest.raises(WebhookVerificationError):
        _verify(new, request)


def _allow(app, settings, *allowlist: str) -> None:
    """TESSERA_OUTBOUND_ALLOWLIST as given (nothing private is allow-listed as deployed by default)."""
    app.state.settings = settings.model_copy(update={"outbound_allowlist": list(allowlist)})


PRIVATE_HOSTS = ["127.0.0.1:{port}", "[::ffff:127.0.0.1]:{port}", "169.254.169.254", "localhost:{port}"]


@pytest.mark.parametrize("host", PRIVATE_HOSTS)
def test_the_test_button_refuses_destinations_the_allowlist_no_longer_admits(
    app, settings, client, tenant, receiver: Receiver, host
):
    _allow(app, settings, "127.0.0.0/8", "169.254.0.0/16", "localhost")
    channel = _webhook(client, tenant, f"http://{host.format(port=receiver.port)}/hook")
    _allow(app, settings)
    result = client.post(f"/api/v1/channels/{channel['id']}/test", headers=tenant.headers).json()
    assert result["state"] == "failed" and "not a public address" in result["last_error"]
    assert "TESSERA_OUTBOUND_ALLOWLIST" in result["last_error"]
    assert receiver.requests == []


@pytest.mark.parametrize("host", PRIVATE_HOSTS)
def test_a_channel_the_policy_refuses_is_refused_at_creation_and_on_update(app, settings, client, tenant, host):
    url = f"http://{host.format(port=9)}/hook"
    allowed = _webhook(client, tenant, "http://127.0.0.1:9/allowed")
    _allow(app, settings)
    for response in (
        *(
            client.post("/api/v1/channels", json={"type": kind, "name": "private", "url": url}, headers=tenant.headers)
            for kind in ("webhook", "slack")
        ),
        client.patch(f"/api/v1/channels/{allowed['id']}", json={"url": url}, headers=tenant.headers),
    ):
        assert response.status_code == 400, response.text
        message = response.json()["message"]
        assert "not a public address" in message and "TESSERA_OUTBOUND_ALLOWLIST" in message
    email = {"type": "email", "name": "smtp", "smtp_host": "127.0.0.1", "sender": "a@b.c", "recipients": ["x@y.z"]}
    refused = client.post("/api/v1/channels", json=email, headers=tenant.headers)
    assert refused.status_code == 400 and "127.0.0.1 is not a public address" in refused.json()["message"]


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0177.0.0.1", "017700000001", "127.000.000.001", "0x7f.0.0.1"])
def test_numeric_ipv4_spellings_are_stored_and_sent_in_canonical_form(client, tenant, receiver: Receiver, host):
    channel = _webhook(client, tenant, f"http://{host}:{receiver.port}/hook")
    assert channel["config"]["host"] == "127.0.0.1"
    result = client.post(f"/api/v1/channels/{channel['id']}/test", headers=tenant.headers).json()
    assert result["state"] == "delivered", result
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("host", ["1.2.3.256", "1.2.3.4.5", "08.0.0.1"])
def test_a_host_that_is_a_broken_ipv4_address_is_refused_at_creation(client, tenant, host):
    body = {"type": "webhook", "name": "broken", "url": f"http://{host}/hook"}
    refused = client.post("/api/v1/channels", json=body, headers=tenant.headers)
    assert refused.status_code == 400 and "not a valid IPv4 address" in refused.json()["message"]


def test_the_test_button_does_not_follow_a_redirect_to_localhost(client, tenant, receiver: Receiver):
    receiver.script(Reply(302, headers={"location": "http://localhost/admin"}))
    channel = _webhook(client, tenant, receiver.url())
    result = client.post(f"/api/v1/channels/{channel['id']}/test", headers=tenant.headers).json()
    assert result["state"] == "failed" and "redirects are not followed" in result["last_error"]
    assert len(receiver.requests) == 1


def test_only_org_admins_manage_channels_and_other_orgs_see_nothing(client, db_session, tenant, other_tenant, settings):
    member = make_member(db_session, org_id=tenant.org_id, role="member", jwt_secret=settings.jwt_secret)
    body = {"type": "slack", "name": "x", "url": SLACK_URL, "organization_id": str(tenant.org_id)}
    assert client.post("/api/v1/channels", json=body, headers=member.headers).status_code == 403
    channel = client.post("/api/v1/channels", json=body, headers=tenant.headers).json()
    assert client.get(f"/api/v1/channels/{channel['id']}", headers=member.headers).status_code == 200
    assert client.get(f"/api/v1/channels/{channel['id']}", headers=other_tenant.headers).status_code == 404
    assert client.post(f"/api/v1/channels/{channel['id']}/test", headers=other_tenant.headers).status_code == 404


def test_rules_crud_validation_and_preview(client, tenant, receiver: Receiver):
    channel = _webhook(client, tenant, receiver.url())
    rule = {
        "name": "drift on churn",
        "event_types": ["alert.*", "drift.detected"],
        "min_severity": "warning",
        "matchers": ['model=~"churn.*"'],
        "channel_ids": [channel["id"]],
        "group_by": ["model"],
    }
    created = client.post("/api/v1/rules", json=rule, headers=tenant.headers)
    assert created.status_code == 201, created.text
    assert created.json()["group_wait_s"] == 30 and created.json()["repeat_interval_s"] == 14400
    assert created.json()["matchers"] == [{"name": "model", "type": "=~", "value": "churn.*"}]

    bad = client.post("/api/v1/rules", json={**rule, "name": "bad", "matchers": ["model=~("]}, headers=tenant.headers)
    assert bad.status_code == 400
    unknown = {**rule, "name": "other", "channel_ids": ["00000000-0000-0000-0000-000000000000"]}
    assert client.post("/api/v1/rules", json=unknown, headers=tenant.headers).status_code == 400

    def preview(event_type, **payload):
        response = client.post(
            "/api/v1/rules/preview", json={"event_type": event_type, "payload": payload}, headers=tenant.headers
        )
        assert response.status_code == 200, response.text
        return response.json()

    hit = preview("alert.firing", model_name="churn-v2", severity="critical")
    assert [r["rule"]["name"] for r in hit["rules"]] == ["drift on churn"]
    assert hit["labels"]["model"] == "churn-v2" and hit["rules"][0]["group_key"].endswith('{model="churn-v2"}')
    assert preview("alert.firing", model_name="churn-v2", severity="info")["rules"] == []
    assert preview("alert.firing", model_name="fraud", severity="critical")["rules"] == []
    assert preview("deployment.failed", model_name="churn")["rules"] == []

    changed = client.patch(
        f"/api/v1/rules/{created.json()['id']}", json={"min_severity": "info"}, headers=tenant.headers
    )
    assert changed.status_code == 200
    assert len(preview("alert.firing", model_name="churn-v2", severity="info")["rules"]) == 1
    assert client.delete(f"/api/v1/rules/{created.json()['id']}", headers=tenant.headers).status_code == 200
    assert preview("alert.firing", model_name="churn-v2", severity="critical")["rules"] == []


def test_silences_and_mute_windows(client, tenant):
    now = datetime.now(UTC)
    silence = client.post(
        "/api/v1/silences",
        json={
            "matchers": ['model="churn"'],
            "ends_at": (now + timedelta(hours=1)).isoformat(),
            "comment": "retraining",
        },
        headers=tenant.headers,
    )
    assert silence.status_code == 201, silence.text
    assert silence.json()["state"] == "active" and silence.json()["created_by"] == tenant.email
    everything = {"matchers": ['model=~".*"'], "ends_at": (now + timedelta(hours=1)).isoformat(), "comment": "x"}
    assert client.post("/api/v1/silences", json=everything, headers=tenant.headers).status_code == 400
    expired = client.delete(f"/api/v1/silences/{silence.json()['id']}", headers=tenant.headers)
    assert expired.json()["state"] == "expired"

    window = {"name": "workdays", "time_intervals": [{"weekdays": ["monday:friday"], "location": "Europe/Berlin"}]}
    created = client.post("/api/v1/silences/mute-windows", json=window, headers=tenant.headers)
    assert created.status_code == 201, created.text
    bad_zone = {"name": "mars", "time_intervals": [{"weekdays": ["monday"], "location": "Mars/Olympus"}]}
    assert client.post("/api/v1/silences/mute-windows", json=bad_zone, headers=tenant.headers).status_code == 400
    listed = client.get("/api/v1/silences/mute-windows", headers=tenant.headers).json()["items"]
    assert [w["name"] for w in listed] == ["workdays"]


def test_custom_events_go_through_the_outbox(client, db_session, tenant):
    accepted = client.post(
        "/api/v1/events",
        json={"event_type": "custom.batch_job.failed", "payload": {"severity": "high", "summary": "nightly ETL"}},
        headers=tenant.headers,
    )
    assert accepted.status_code == 202, accepted.text
    row = db_session.get(OutboxEvent, accepted.json()["id"])
    assert row.organization_id == tenant.org_id and row.payload["summary"] == "nightly ETL"
    forged = client.post("/api/v1/events", json={"event_type": "alert.firing", "payload": {}}, headers=tenant.headers)
    assert forged.status_code == 422


def test_delivery_log_queries_and_redelivery(client, tenant, receiver: Receiver):
    channel = _webhook(client, tenant, receiver.url())
    first = client.post(f"/api/v1/channels/{channel['id']}/test", headers=tenant.headers).json()
    client.post(f"/api/v1/channels/{channel['id']}/test", headers=tenant.headers)
    page = client.get(
        "/api/v1/deliveries", params={"channel_id": channel["id"], "max_results": 1}, headers=tenant.headers
    ).json()
    assert len(page["items"]) == 1 and page["next_page_token"]
    rest = client.get(
        "/api/v1/deliveries",
        params={"channel_id": channel["id"], "page_token": page["next_page_token"]},
        headers=tenant.headers,
    ).json()
    assert [d["id"] for d in rest["items"]] == [first["id"]]

    again = client.post(f"/api/v1/deliveries/{first['id']}/redeliver", headers=tenant.headers)
    assert again.status_code == 200 and again.json()["state"] == "pending" and again.json()["attempts"] == 0
    refused = client.post(f"/api/v1/deliveries/{first['id']}/redeliver", headers=tenant.headers)
    assert refused.status_code == 400 and refused.json()["error_code"] == "INVALID_STATE"
    notification = client.get(f"/api/v1/notifications/{first['notification_id']}", headers=tenant.headers).json()
    assert notification["kind"] == "test"


def test_alertmanager_api_takes_alerts_as_prometheus_posts_them(client, db_session, tenant):
    now = datetime.now(UTC)
    alerts = [
        {
            "labels": {"alertname": "HighLatency", "severity": "critical"},
            "annotations": {"summary": "p99 above 1 s"},
            "startsAt": (now - timedelta(minutes=5)).isoformat(),
            "endsAt": (now + timedelta(minutes=4)).isoformat(),
            "generatorURL": "http://prometheus:9090/graph",
        },
        # Resolved: Prometheus sends the time it stopped firing as endsAt.
        {"labels": {"alertname": "DiskFull"}, "endsAt": (now - timedelta(seconds=30)).isoformat()},
        # Without endsAt: firing until Alertmanager's resolve_timeout after this post.
        {"labels": {"alertname": "QueueBacklog"}, "someFieldOfANewerPrometheus": True},
        # Go's zero time is how amtool and Prometheus say "not set".
        {"labels": {"alertname": "GoClient"}, "startsAt": "0001-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z"},
    ]
    posted = client.post("/api/v2/alerts", json=alerts, headers=tenant.headers)
    assert posted.status_code == 200, posted.text
    rows = db_session.scalars(
        select(OutboxEvent).where(
            OutboxEvent.organization_id == tenant.org_id, OutboxEvent.event_type == "custom.alertmanager"
        )
    ).all()
    by_name = {row.payload["labels"]["alertname"]: row.payload for row in rows}
    assert {name: payload["status"] for name, payload in by_name.items()} == {
        "HighLatency": "firing",
        "DiskFull": "resolved",
        "QueueBacklog": "firing",
        "GoClient": "firing",
    }
    backlog_ends = datetime.fromisoformat(by_name["QueueBacklog"]["ends_at"])
    assert now + timedelta(minutes=4) < backlog_ends < now + timedelta(minutes=6)

    invalid = [
        [{"labels": {}}],
        [{"labels": {"alert-name": "dash is not a label name"}}],
        [{"labels": {"alertname": "x"}, "startsAt": now.isoformat(), "endsAt": (now - timedelta(hours=1)).isoformat()}],
        [{"labels": {"alertname": "x"}, "startsAt": "yesterday"}],
        # At the calendar's edge: no UTC value exists.
        [{"labels": {"alertname": "x"}, "endsAt": "9999-12-31T23:59:59-14:00"}],
    ]
    for body in invalid:
        refused = client.post("/api/v2/alerts", json=body, headers=tenant.headers)
        assert refused.status_code == 422 and refused.json()["error_code"], refused.text
    assert client.post("/api/v2/alerts", json=alerts).status_code == 401


def test_alertmanager_api_lists_firing_alerts_with_receivers_and_silences(client, db_session, tenant, other_tenant):
    channel = _webhook(client, tenant, "http://127.0.0.1:9/hook")
    for name in ("oncall", "audit"):
        rule = {"name": name, "channel_ids": [channel["id"]], "event_types": ["custom.alertmanager"]}
        assert client.post("/api/v1/rules", json=rule, headers=tenant.headers).status_code == 201
    now = datetime.now(UTC)
    alerts = [
        {"labels": {"alertname": "HighLatency", "severity": "critical"}, "startsAt": now.isoformat()},
        {"labels": {"alertname": "DiskFull", "severity": "warning"}, "startsAt": now.isoformat()},
        {"labels": {"alertname": "Gone"}, "endsAt": (now - timedelta(minutes=1)).isoformat()},
    ]
    assert client.post("/api/v2/alerts", json=alerts, headers=tenant.headers).status_code == 200
    handle_posted_alerts(db_session, tenant.org_id)
    silence = {
        "matchers": ['alertname="DiskFull"'],
        "starts_at": now.isoformat(),
        "ends_at": (now + timedelta(hours=1)).isoformat(),
        "comment": "disk being replaced",
    }
    silence_id = client.post("/api/v1/silences", json=silence, headers=tenant.headers).json()["id"]

    listed = client.get("/api/v2/alerts", headers=tenant.headers).json()
    by_name = {alert["labels"]["alertname"]: alert for alert in listed}
    assert set(by_name) == {"HighLatency", "DiskFull"}, "a resolved alert is not listed"
    latency, disk = by_name["HighLatency"], by_name["DiskFull"]
    assert [r["name"] for r in latency["receivers"]] == ["audit", "oncall"], "one entry per alert, every rule"
    assert latency["status"] == {"state": "active", "silencedBy": [], "inhibitedBy": [], "mutedBy": []}
    assert disk["status"]["state"] == "suppressed" and disk["status"]["silencedBy"] == [silence_id]
    assert {"startsAt", "endsAt", "updatedAt", "generatorURL", "fingerprint"} <= set(latency)

    def names(**params) -> list[str]:
        answer = client.get("/api/v2/alerts", params=params, headers=tenant.headers)
        assert answer.status_code == 200, answer.text
        return sorted(alert["labels"]["alertname"] for alert in answer.json())

    assert names(silenced="false") == ["HighLatency"]
    assert names(active="false") == ["DiskFull"]
    assert names(filter=['severity=~"crit.*"']) == ["HighLatency"]
    assert names(receiver="on.*") == ["DiskFull", "HighLatency"] and names(receiver="nobody") == []
    assert client.get("/api/v2/alerts", params={"filter": "severity=~("}, headers=tenant.headers).status_code == 400
    assert client.get("/api/v2/alerts", headers=other_tenant.headers).json() == []


def test_alertmanager_api_silences_as_amtool_uses_them(client, tenant, other_tenant):
    now = datetime.now(UTC)
    silence = {
        "matchers": [
            {"name": "alertname", "value": "DiskFull", "isRegex": False, "isEqual": True},
            {"name": "instance", "value": "db-.*", "isRegex": True},
        ],
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=2)).isoformat(),
        "createdBy": "amtool",
        "comment": "disk being replaced",
    }
    created = client.post("/api/v2/silences", json=silence, headers=tenant.headers)
    assert created.status_code == 200, created.text
    silence_id = created.json()["silenceID"]
    one = client.get(f"/api/v2/silence/{silence_id}", headers=tenant.headers).json()
    assert one["status"] == {"state": "active"} and one["comment"] == "disk being replaced"
    assert one["matchers"] == [
        {"name": "alertname", "value": "DiskFull", "isRegex": False, "isEqual": True},
        {"name": "instance", "value": "db-.*", "isRegex": True, "isEqual": True},
    ]
    # The same silence as the v1 API's.
    assert client.get(f"/api/v1/silences/{silence_id}", headers=tenant.headers).json()["state"] == "active"

    def listed(*filters: str) -> list[str]:
        answer = client.get("/api/v2/silences", params={"filter": list(filters)}, headers=tenant.headers)
        assert answer.status_code == 200, answer.text
        return [item["id"] for item in answer.json() if item["status"]["state"] == "active"]

    assert listed() == [silence_id] and listed('alertname="DiskFull"') == [silence_id]
    assert listed('alertname="Other"') == []

    # Update: the old one expires, a new one replaces it.
    update = {**silence, "id": silence_id, "comment": "longer"}
    replaced = client.post("/api/v2/silences", json=update, headers=tenant.headers)
    new_id = replaced.json()["silenceID"]
    assert new_id != silence_id and listed() == [new_id]
    assert client.get(f"/api/v2/silence/{silence_id}", headers=tenant.headers).json()["status"]["state"] == "expired"
    assert client.delete(f"/api/v2/silence/{new_id}", headers=tenant.headers).status_code == 200
    assert listed() == []

    assert client.get(f"/api/v2/silence/{new_id}", headers=other_tenant.headers).status_code == 404
    assert client.post("/api/v2/silences", json={**silence, "matchers": []}, headers=tenant.headers).status_code == 422
    empty_matching = {**silence, "matchers": [{"name": "team", "value": ".*", "isRegex": True}]}
    assert client.post("/api/v2/silences", json=empty_matching, headers=tenant.headers).status_code == 400

    status = client.get("/api/v2/status", headers=tenant.headers).json()
    assert status["cluster"]["status"] == "disabled" and status["versionInfo"]["version"]


def test_inhibit_rules_crud_and_inhibited_alerts_in_the_alertmanager_listing(client, db_session, tenant, other_tenant):
    body = {
        "name": "critical mutes warnings",
        "source_matchers": ["severity=critical"],
        "target_matchers": ['severity=~"warning|info"'],
        "equal": ["cluster"],
    }
    created = client.post("/api/v1/inhibit-rules", json=body, headers=tenant.headers)
    assert created.status_code == 201, created.text
    rule_id = created.json()["id"]
    again = client.post("/api/v1/inhibit-rules", json=body, headers=tenant.headers)
    assert again.status_code == 400 and again.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    for bad in ({**body, "name": "x", "source_matchers": []}, {**body, "name": "y", "equal": ["not-a-label"]}):
        assert client.post("/api/v1/inhibit-rules", json=bad, headers=tenant.headers).status_code == 422
    bad_regex = {**body, "name": "z", "target_matchers": ["severity=~("]}
    assert client.post("/api/v1/inhibit-rules", json=bad_regex, headers=tenant.headers).status_code == 400
    assert [r["id"] for r in client.get("/api/v1/inhibit-rules", headers=tenant.headers).json()["items"]] == [rule_id]
    assert client.get(f"/api/v1/inhibit-rules/{rule_id}", headers=other_tenant.headers).status_code == 404

    channel = _webhook(client, tenant, "http://127.0.0.1:9/hook")
    rule = {"name": "all", "channel_ids": [channel["id"]]}
    assert client.post("/api/v1/rules", json=rule, headers=tenant.headers).status_code == 201
    alerts = [
        {"labels": {"alertname": "ClusterDown", "severity": "critical", "cluster": "eu"}},
        {"labels": {"alertname": "HighLatency", "severity": "warning", "cluster": "eu"}},
        {"labels": {"alertname": "HighLatency", "severity": "warning", "cluster": "us"}},
    ]
    assert client.post("/api/v2/alerts", json=alerts, headers=tenant.headers).status_code == 200
    handle_posted_alerts(db_session, tenant.org_id)

    listed = client.get("/api/v2/alerts", headers=tenant.headers).json()
    by_cluster = {(a["labels"]["alertname"], a["labels"]["cluster"]): a for a in listed}
    down = by_cluster[("ClusterDown", "eu")]
    assert by_cluster[("HighLatency", "eu")]["status"]["inhibitedBy"] == [down["fingerprint"]]
    assert by_cluster[("HighLatency", "eu")]["status"]["state"] == "suppressed"
    assert by_cluster[("HighLatency", "us")]["status"]["state"] == "active"
    # The native view of one held alert (posted alerts have no producer fingerprint: the labels' own).
    held = client.get(f"/api/v1/held-alerts/{by_cluster[('HighLatency', 'eu')]['fingerprint']}", headers=tenant.headers)
    assert held.status_code == 200, held.text
    assert held.json()["state"] == "suppressed" and held.json()["silenced_by"] == []
    assert [(i["fingerprint"], i["labels"]["alertname"]) for i in held.json()["inhibited_by"]] == [
        (down["fingerprint"], "ClusterDown")
    ]
    assert client.get(f"/api/v1/held-alerts/{down['fingerprint']}", headers=other_tenant.headers).status_code == 404
    assert client.get("/api/v1/held-alerts/nothing-holds-this", headers=tenant.headers).status_code == 404
    shown = client.get("/api/v2/alerts", params={"inhibited": "false"}, headers=tenant.headers).json()
    assert {(a["labels"]["alertname"], a["labels"]["cluster"]) for a in shown} == {
        ("ClusterDown", "eu"),
        ("HighLatency", "us"),
    }

    assert client.delete(f"/api/v1/inhibit-rules/{rule_id}", headers=tenant.headers).status_code == 204
    listed = client.get("/api/v2/alerts", headers=tenant.headers).json()
    assert all(a["status"]["state"] == "active" for a in listed)
