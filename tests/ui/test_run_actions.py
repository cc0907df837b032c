"""Changing runs from MLflow's UI goes through Tessera's permissions; another organization sees nothing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from mlflow import MlflowClient

from tests import factories


@dataclass
class Team:
    owner: factories.Tenant
    viewer: factories.Member
    outsider: factories.Tenant
    experiment_id: str
    experiment_name: str
    run_id: str


@pytest.fixture(scope="module")
def team(live_server, db, settings) -> Team:
    with db.session_scope() as session:
        owner = factories.make_tenant(session, jwt_secret=settings.jwt_secret)
        viewer = factories.make_member(session, org_id=owner.org_id, role="viewer", jwt_secret=settings.jwt_secret)
        outsider = factories.make_tenant(session, jwt_secret=settings.jwt_secret)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", owner.api_key)
        client = MlflowClient(live_server.url)
        name = f"pricing-{uuid.uuid4().hex[:6]}"
        experiment_id = client.create_experiment(name)
        run = client.create_run(experiment_id, run_name="tidy-lynx", tags={"owner": "pricing"})
        client.log_metric(run.info.run_id, "rmse", 0.42)
        client.set_terminated(run.info.run_id)
    return Team(owner, viewer, outsider, experiment_id, name, run.info.run_id)


def _run(live_server, team: Team):
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", team.owner.api_key)
        return MlflowClient(live_server.url).get_run(team.run_id)


def _open_run(signed_in, team: Team, name: str):
    signed_in.open(f"/experiments/{team.experiment_id}/runs/{team.run_id}")
    signed_in.page.get_by_text(name).first.wait_for(timeout=20_000)
    return signed_in.page


def _rename(page, new_name: str) -> None:
    page.get_by_role("button", name="Open header dropdown menu").click()
    page.get_by_role("menuitem", name="Rename").click()
    dialog = page.get_by_role("dialog")
    dialog.locator("input").fill(new_name)
    dialog.get_by_role("button", name="Save").click()


def test_viewer_cannot_rename_a_run(browser, live_server, team):
    viewer = browser.signed_in(team.viewer.email)
    page = _open_run(viewer, team, "tidy-lynx")
    _rename(page, "renamed-by-viewer")
    page.wait_for_timeout(1500)
    viewer.check_screenshot("run_rename_refused_for_viewer")
    assert any("403 POST" in failure and "runs/update" in failure for failure in viewer.failed_requests)
    assert _run(live_server, team).info.run_name == "tidy-lynx"
    viewer.page.context.close()


def test_owner_renames_tags_deletes_and_restores_a_run(browser, live_server, team):
    owner = browser.signed_in(team.owner.email)
    page = _open_run(owner, team, "tidy-lynx")

    _rename(page, "tidy-lynx-v2")
    page.get_by_role("heading", name="tidy-lynx-v2").wait_for(timeout=20_000)
    owner.check("run_renamed", "tidy-lynx-v2")
    assert _run(live_server, team).info.run_name == "tidy-lynx-v2"

    page.get_by_role("button", name="Edit tags").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("combobox").first.fill("reviewed")
    page.keyboard.press("Enter")
    dialog.get_by_placeholder("Type a value").fill("yes")
    dialog.get_by_role("button", name="Add tag").click()
    dialog.get_by_role("button", name="Save tags").click()
    dialog.wait_for(state="hidden", timeout=20_000)
    owner.check("run_tagged", "reviewed")
    assert _run(live_server, team).data.tags.get("reviewed") == "yes"

    page.get_by_role("button", name="Open header dropdown menu").click()
    page.get_by_role("menuitem", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete selected").click()
    page.wait_for_url(lambda url: team.run_id not in url, timeout=20_000)
    owner.check("run_deleted")
    assert _run(live_server, team).info.lifecycle_stage == "deleted"

    owner.open(f"/experiments/{team.experiment_id}/runs?lifecycleFilter=Deleted")
    page.get_by_text("tidy-lynx-v2").first.wait_for(timeout=20_000)
    page.get_by_role("checkbox").nth(1).check()
    page.get_by_role("button", name="Restore").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="Restore").click()
    dialog.wait_for(state="hidden", timeout=20_000)
    owner.check("run_restored")
    assert _run(live_server, team).info.lifecycle_stage == "active"
    page.context.close()


def test_another_organization_sees_none_of_it(browser, team):
    outsider = browser.signed_in(team.outsider.email)
    outsider.open("/experiments")
    outsider.check("experiments_list_other_org", "Experiments")
    assert outsider.page.get_by_text(team.experiment_name).count() == 0
    outsider.open(f"/experiments/{team.experiment_id}/runs/{team.run_id}")
    outsider.page.get_by_text(f"Run ID {team.run_id} does not exist").wait_for(timeout=20_000)
    outsider.check_screenshot("run_of_other_org")
    assert outsider.page.get_by_text("tidy-lynx").count() == 0
    outsider.page.context.close()
