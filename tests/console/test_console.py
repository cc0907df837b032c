"""The console, driven in Chromium the way a person uses it (see conftest.py for the world it looks at)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from playwright.sync_api import expect

from tessera.worker import celery_app
from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.slow


def test_roll_back_a_deployment_from_the_list_and_see_it_in_the_history(signed_in, world):
    s = signed_in(world.owner.email)
    page = s.open("/console/deployments")
    page.get_by_role("link", name="fraud-prod", exact=False).first.click()
    expect(page.get_by_test_id("split")).to_contain_text("canary 20 %")
    expect(page.get_by_test_id("replicas")).to_contain_text("1 per version")
    expect(page.get_by_test_id("batching")).to_contain_text("off")
    history = page.get_by_test_id("history")
    expect(history).to_contain_text("automatic: canary error rate 0.31 > 0.05")
    expect(history).to_contain_text("the platform (automatic)")
    expect(history).to_contain_text(world.owner.email)
    s.shot("deployment-before")
    page.get_by_label("Reason").fill("p95 latency regressed")
    page.get_by_test_id("rollback").click()
    expect(page.get_by_test_id("outcome")).to_have_text("Rolled back")
    expect(page.get_by_test_id("canary-version")).to_contain_text("none")
    first = history.locator("li").first
    expect(first).to_contain_text("rollback")
    expect(first).to_contain_text("p95 latency regressed")
    expect(first).to_contain_text(world.owner.email)
    s.shot("deployment-rolled-back")
    with httpx.Client(base_url=world.url, headers=world.owner.headers) as api:
        assert api.get(f"/api/v1/deployments/{world.deployment_id}").json()["canary_version_id"] is None


def test_run_a_check_now_and_see_the_report(signed_in, world):
    s = signed_in(world.owner.email)
    page = s.open("/console/monitors")
    page.get_by_role("link", name="fraud-drift", exact=False).first.click()
    page.get_by_test_id("run-check").click()
    expect(page.get_by_test_id("check-progress")).to_be_visible()
    page.get_by_test_id("new-report").click(timeout=60_000)
    expect(page.locator("#drift-chart canvas")).to_be_visible()
    frame = page.frame_locator("[data-testid=report-frame]")
    expect(frame.locator("body")).to_contain_text("drift", ignore_case=True, timeout=15_000)
    # Both columns drifted in both reports (the world's check and this one): one red cell per report each.
    columns = page.get_by_test_id("column-drift")
    expect(columns.locator("thead th")).to_have_count(2 + 2)
    for name in ("x", "y"):
        expect(columns.locator("tr", has_text=name).locator("td.flagged")).to_have_count(2)
    # Three in four predictions were right; the threshold is 0.9.
    quality = page.get_by_test_id("quality")
    expect(quality.locator("tbody tr")).to_have_count(2)
    expect(quality.locator("tbody tr").first.locator("td.flagged")).to_have_text("0.75")
    s.shot("monitor-report")


def test_acknowledge_and_silence_an_alert(signed_in, world):
    s = signed_in(world.owner.email)
    page = s.open("/console/alerts?status=firing")
    page.locator(f'a[href="/console/alerts/{world.alert_id}"]').click()
    expect(page.get_by_test_id("inhibited-by")).to_contain_text("Inhibited by the firing alert ClusterDown")
    expect(page.get_by_test_id("silenced-by")).to_have_count(0)
    page.get_by_test_id("acknowledge").click()
    expect(page.get_by_test_id("outcome")).to_have_text("Acknowledged")
    expect(page.locator("h1")).to_contain_text("acknowledged")
    matchers = page.get_by_label("Matchers (one per line)")
    # Prefilled with the alert's labels, one matcher each.
    with httpx.Client(base_url=world.url, headers=world.owner.headers) as api:
        labels = api.get(f"/api/v1/alerts/{world.alert_id}").json()["labels"]
    expect(matchers).to_have_value("\n".join(f'{k}="{v}"' for k, v in sorted(labels.items())))
    assert f'monitor="{_monitor_label(world)}"' in matchers.input_value()
    # Everything from this monitor, whatever else its alert's labels say.
    matchers.fill(f'monitor="{_monitor_label(world)}"')
    page.get_by_label("For").select_option("4h")
    page.get_by_label("Comment").fill("retraining, known drift")
    page.get_by_test_id("silence").click()
    expect(page.get_by_test_id("outcome")).to_contain_text("Silenced until")
    expect(page.get_by_test_id("silenced-by")).to_contain_text("retraining, known drift")
    expect(page.get_by_test_id("suppression")).to_contain_text(world.owner.email)
    s.shot("alert-silenced")
    with httpx.Client(base_url=world.url, headers=world.owner.headers) as api:
        silences = api.get("/api/v1/silences", params={"organization_id": str(world.owner.org_id)}).json()
    silences = silences["items"] if isinstance(silences, dict) else silences
    assert any(x["comment"] == "retraining, known drift" for x in silences)
    page.get_by_role("link", name="Silences").click()
    row = page.locator("tr", has_text="retraining, known drift")
    expect(row).to_contain_text(f'monitor="{_monitor_label(world)}"')
    expect(row).to_contain_text("active")
    s.shot("silences")


def _monitor_label(world) -> str:
    with httpx.Client(base_url=world.url, headers=world.owner.headers) as api:
        return api.get(f"/api/v1/monitors/{world.monitor_id}").json()["name"]


class _Receiver(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self):
        self.received.append(self.rfile.read(int(self.headers.get("content-length", 0))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_create_a_webhook_channel_send_a_test_and_see_the_attempt(signed_in, world):
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        s = signed_in(world.owner.email)
        page = s.open("/console/channels")
        page.get_by_label("Name").fill("ops-webhook")
        page.get_by_label("URL").fill(f"http://127.0.0.1:{server.server_address[1]}/hook")
        page.get_by_test_id("create-channel").click()
        expect(page.get_by_test_id("signing-secret")).to_contain_text("whsec_")
        s.shot("channel-created")
        page.get_by_role("link", name="ops-webhook").click()
        page.get_by_test_id("send-test").click()
        expect(page.get_by_test_id("outcome")).to_contain_text("delivered")
        page.get_by_test_id("show-attempts").first.click()
        attempts = page.get_by_test_id("attempts")
        expect(attempts).to_contain_text("200")
        s.shot("channel-attempts")
        assert len(_Receiver.received) == 1
        attempts.get_by_test_id("redeliver").click()
        expect(page.get_by_text("Queued again for delivery.")).to_be_visible()
        # Beat's sweep queues a redelivery; the test has no beat, so it queues it the same way.
        with httpx.Client(base_url=world.url, headers=world.owner.headers) as api:
            delivery_ids = [d["id"] for d in api.get("/api/v1/deliveries", params={"state": "pending"}).json()["items"]]
        celery_app.send_task("notifier.dispatch", [delivery_ids])
        wait_for(lambda: len(_Receiver.received) == 2, what="the redelivery to arrive")
    finally:
        server.shutdown()


def test_create_an_api_key_and_use_it_from_a_script(signed_in, world):
    s = signed_in(world.owner.email)
    page = s.open("/console/api-keys")
    page.get_by_label("Name").fill("ci-reader")
    page.get_by_label("deployments:read").check()
    page.get_by_label("Expires").select_option("30d")
    page.get_by_test_id("create-key").click()
    key = page.get_by_test_id("api-key").inner_text().strip()
    s.shot("api-key-created")
    with httpx.Client(base_url=world.url) as client:
        listed = client.get(f"/api/v1/deployments/{world.deployment_id}", headers={"Authorization": f"Bearer {key}"})
        assert listed.status_code == 200, listed.text
        refused = client.post(
            f"/api/v1/deployments/{world.deployment_id}/promote", headers={"Authorization": f"Bearer {key}"}
        )
        assert refused.status_code == 403  # read scope only
    page.locator("tr", has_text="ci-reader").get_by_test_id("revoke").click()
    expect(page.get_by_test_id("outcome")).to_contain_text("revoked")
    with httpx.Client(base_url=world.url) as client:
        gone = client.get(f"/api/v1/deployments/{world.deployment_id}", headers={"Authorization": f"Bearer {key}"})
        assert gone.status_code == 401


def test_follow_a_version_from_its_deployment_to_its_lineage_and_training_run(signed_in, world):
    s = signed_in(world.owner.email)
    page = s.open(f"/console/deployments/{world.deployment_id}")
    page.get_by_test_id("stable-version").get_by_role("link").click()
    expect(page).to_have_url(f"{world.url}/console/models/{world.model_name}/versions/1")
    expect(page.get_by_test_id("lineage-deployments")).to_contain_text("stable")
    expect(page.get_by_test_id("lineage-monitors")).to_contain_text("fraud-drift")
    expect(page.get_by_test_id("lineage-alerts")).to_contain_text("Data drift on fraud-drift")
    run_link = page.get_by_test_id("mlflow-run-link")
    expect(run_link).to_have_text("sturdy-owl-42")
    expect(run_link).to_have_attribute("href", f"/#/experiments/{world.experiment_id.hex}/runs/{world.run_id.hex}")
    s.shot("lineage")
    with httpx.Client(base_url=world.url, headers=world.owner.headers) as api:
        run = api.get("/api/2.0/mlflow/runs/get", params={"run_id": world.run_id.hex})
        assert run.json()["run"]["info"]["run_name"] == "sturdy-owl-42"


def test_a_viewer_gets_no_write_buttons_and_a_forged_post_is_refused(signed_in, world):
    s = signed_in(world.viewer.email)
    page = s.open(f"/console/deployments/{world.deployment_id}")
    expect(page.get_by_test_id("history")).to_be_visible()
    expect(page.get_by_role("button", name="Roll back")).to_have_count(0)
    s.shot("viewer-deployment")
    s.open(f"/console/alerts/{world.alert_id}")
    expect(page.get_by_role("button")).to_have_count(1)  # only "Sign out"
    s.open(f"/console/monitors/{world.monitor_id}")
    expect(page.get_by_test_id("run-check")).to_have_count(0)
    for path in ("/console/rules", "/console/mute-windows", "/console/channels"):
        s.open(path)
        expect(page.locator("main form")).to_have_count(0)
    page.get_by_role("link", name="parked").first.click()
    expect(page.get_by_test_id("edit-channel")).to_have_count(0)
    before = len(_history(world))
    csrf = next(c["value"] for c in s.context.cookies() if c["name"] == "tessera_csrf")
    rollback = f"/console/deployments/{world.deployment_id}/rollback"
    origin = {"Origin": world.url}
    # The viewer's own page, with every token right: the API refuses the role.
    forged = page.request.post(rollback, form={"reason": "forged", "csrf_token": csrf}, headers=origin)
    assert forged.status == 403 and "cannot do this" in forged.text()
    # Another site's form (the browser sends the cookie, not the token; the Origin gives it away).
    cross_site = page.request.post(rollback, form={"reason": "forged"}, headers={"Origin": "https://evil.example"})
    assert cross_site.status == 403 and "Cross-origin" in cross_site.text()
    no_token = page.request.post(rollback, form={"reason": "forged"}, headers=origin)
    assert no_token.status == 403 and "CSRF" in no_token.text()
    assert len(_history(world)) == before


def _history(world) -> list:
    with httpx.Client(base_url=world.url, headers=world.owner.headers) as api:
        body = api.get(f"/api/v1/deployments/{world.deployment_id}/history").json()
    return body["items"] if isinstance(body, dict) else body


def test_another_organization_sees_none_of_it(signed_in, world):
    s = signed_in(world.stranger.email)
    page = s.open("/console/deployments")
    expect(page.locator("main")).to_contain_text("No deployments yet")
    s.open("/console/alerts")
    expect(page.locator("main")).not_to_contain_text("Data drift on fraud-drift")
    s.shot("stranger-alerts")
    for path in (
        f"/console/deployments/{world.deployment_id}",
        f"/console/monitors/{world.monitor_id}",
        f"/console/alerts/{world.alert_id}",
        f"/console/models/{world.model_name}/versions/1",
    ):
        assert page.request.get(path).status == 404, path


def test_give_a_member_a_project_role_and_take_it_back(signed_in, world):
    s = signed_in(world.owner.email)
    page = s.open("/console/members")
    expect(page.locator("main")).to_contain_text(world.viewer.email)
    page.get_by_test_id("project-switcher").select_option(label="Default")
    page.wait_for_url(f"{world.url}/console/members")
    project_form = page.locator("form", has=page.locator("input[name=scope][value=project]")).last
    project_form.get_by_label("Email").fill(world.viewer.email)
    project_form.get_by_label("Role").select_option("member")
    project_form.get_by_role("button", name="Add").click()
    expect(page.get_by_test_id("outcome")).to_contain_text(f"{world.viewer.email} added as member")
    s.shot("project-member-added")
    with httpx.Client(base_url=world.url, headers=world.owner.headers) as api:
        roles = api.get(f"/api/v1/projects/{world.owner.project_id}/members").json()["items"]
    assert [m["role"] for m in roles if m["email"] == world.viewer.email] == ["member"]
    rows = page.locator("tr", has_text=world.viewer.email)
    rows.last.get_by_role("button", name="Remove").click()
    expect(page.get_by_test_id("outcome")).to_contain_text("Member removed")
    with httpx.Client(base_url=world.url, headers=world.owner.headers) as api:
        roles = api.get(f"/api/v1/projects/{world.owner.project_id}/members").json()["items"]
    assert world.viewer.email not in [m["email"] for m in roles]


def test_edit_a_channel_and_manage_rules_and_mute_windows(signed_in, world):
    s = signed_in(world.owner.email)
    page = s.open("/console/channels")
    page.get_by_role("link", name="parked", exact=True).click()
    channel_path = page.url.removeprefix(world.url)
    edit = page.get_by_test_id("edit-channel")
    edit.locator("summary").click()
    # The URL is a secret: never shown again, and a bad one is refused next to its field.
    expect(edit.get_by_label("New URL")).to_have_value("")
    s.expect_refusal(400, channel_path)
    edit.get_by_label("New URL").fill("ftp://127.0.0.1/hook")
    page.get_by_test_id("save-channel").click()
    url_error = page.get_by_test_id("edit-channel").locator("label:has-text('New URL') + .field-error")
    expect(url_error).to_contain_text("scheme 'ftp' is not allowed")
    page.get_by_test_id("edit-channel").get_by_label("New URL").fill("")
    page.get_by_test_id("edit-channel").get_by_label("Name").fill("parked-renamed")
    page.get_by_test_id("save-channel").click()
    expect(page.get_by_test_id("outcome")).to_have_text("Channel saved")
    expect(page.locator("h1")).to_contain_text("parked-renamed")
    expect(page.locator("main")).not_to_contain_text("whsec_")
    s.shot("channel-edited")

    page = s.open("/console/rules")
    rules = page.get_by_test_id("rules")
    expect(rules.locator("tr", has_text="custom alerts")).to_contain_text("parked-renamed")
    s.expect_refusal(422, "/console/rules")
    page.get_by_label("Name", exact=True).fill("ops-rule")
    page.get_by_label("Event types", exact=False).fill("alert.*, deployment.rolled_back")
    page.get_by_test_id("create-rule").click()  # no channel chosen
    expect(page.locator("[data-testid=rule-form] .field-error")).to_contain_text("at least 1")
    expect(page.get_by_label("Name", exact=True)).to_have_value("ops-rule")
    page.get_by_label("parked-renamed").check()
    page.get_by_label("Minimum severity").select_option("high")
    page.get_by_test_id("create-rule").click()
    expect(page.get_by_test_id("outcome")).to_have_text("Rule ops-rule created")
    row = page.get_by_test_id("rules").locator("tr", has_text="ops-rule")
    expect(row).to_contain_text("alert.*, deployment.rolled_back")
    expect(row).to_contain_text("high")
    s.shot("rules")
    row.get_by_test_id("delete-rule").click()
    expect(page.get_by_test_id("outcome")).to_have_text("Rule ops-rule deleted")
    expect(page.get_by_test_id("rules").locator("tr", has_text="ops-rule")).to_have_count(0)

    page = s.open("/console/mute-windows")
    s.expect_refusal(400, "/console/mute-windows")
    page.get_by_label("Name").fill("weekends")
    page.get_by_label("Weekdays").fill("saturday, sunday")
    page.get_by_label("Time zone").fill("Mars/Olympus_Mons")
    page.get_by_test_id("create-mute-window").click()
    expect(page.locator("[data-testid=mute-window-form] .field-error")).to_contain_text("Mars/Olympus_Mons")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    page.get_by_test_id("create-mute-window").click()
    expect(page.get_by_test_id("outcome")).to_have_text("Mute window weekends created")
    row = page.get_by_test_id("mute-windows").locator("tr", has_text="weekends")
    expect(row).to_contain_text("weekdays: saturday, sunday")
    expect(row).to_contain_text("Europe/Berlin")
    s.shot("mute-windows")
    with httpx.Client(base_url=world.url, headers=world.owner.headers) as api:
        names = [w["name"] for w in api.get("/api/v1/silences/mute-windows").json()["items"]]
        assert names == ["weekends"]
        assert "ops-rule" not in [r["name"] for r in api.get("/api/v1/rules").json()["items"]]
    row.get_by_test_id("delete-mute-window").click()
    expect(page.get_by_test_id("outcome")).to_have_text("Mute window deleted")
    expect(page.locator("main")).to_contain_text("No mute windows.")
