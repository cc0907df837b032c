"""Every page of MLflow's UI a data scientist uses, over data the official mlflow client logged to Tessera."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest


@pytest.fixture(scope="module")
def owner(browser, logged):
    return browser.signed_in(logged.tenant.email)


def test_experiments_list(owner, logged):
    owner.open("/experiments")
    owner.check("experiments_list", logged.experiment_name)


def _runs_search_by_accuracy(response) -> bool:
    return "runs/search" in response.url and "accuracy" in (response.request.post_data or "")


def test_runs_table_filters_and_sorts_by_metric(owner, logged):
    owner.open(f"/experiments/{logged.experiment_id}/runs")
    owner.page.get_by_text("Model training", exact=True).click()
    owner.check("runs_table", "brave-owl", "calm-fox", "swift-hare")
    page = owner.page
    page.get_by_role("button", name="Sort: Created").click()
    with page.expect_response(_runs_search_by_accuracy) as sorted_:
        page.get_by_text("accuracy", exact=True).last.click()
    page.keyboard.press("Escape")
    assert "metrics.`accuracy` DESC" in sorted_.value.request.post_data
    names = [run["info"]["run_name"] for run in sorted_.value.json()["runs"]]
    assert names == ["swift-hare", "calm-fox", "brave-owl"]  # highest final accuracy first
    owner.check("runs_sort_metric", "Sort: accuracy")
    search = owner.page.get_by_placeholder("metrics.rmse", exact=False)
    search.fill("params.learning_rate = '0.01'")
    search.press("Enter")
    owner.page.get_by_text("brave-owl").wait_for(state="hidden", timeout=20_000)
    owner.check("runs_filter", "calm-fox")
    assert owner.page.get_by_text("swift-hare").count() == 0


def test_run_overview_shows_params_metrics_and_tags(owner, logged):
    run_id = logged.runs["brave-owl"]
    owner.open(f"/experiments/{logged.experiment_id}/runs/{run_id}")
    owner.check("run_overview", "brave-owl", "learning_rate", "max_depth", "accuracy", "loss", "tuning")


def test_run_artifacts_preview_text_image_and_table(owner, logged):
    run_id = logged.runs["brave-owl"]
    owner.open(f"/experiments/{logged.experiment_id}/runs/{run_id}/artifacts")
    page = owner.page
    page.get_by_text("notes.txt").first.click()
    owner.check("run_artifact_txt", "Trained on the March churn snapshot.")
    page.get_by_text("plots", exact=True).first.click()
    page.get_by_text("confusion.png").first.click()
    page.wait_for_function("[...document.images].some(i => i.complete && i.naturalWidth === 8)", timeout=20_000)
    owner.check("run_artifact_png")
    page.get_by_text("data", exact=True).first.click()
    page.get_by_text("predictions.csv").first.click()
    owner.check("run_artifact_csv", "c-001", "0.93")


def test_metric_charts_overlay_several_runs(owner, logged):
    owner.open(f"/experiments/{logged.experiment_id}/runs?compareRunsMode=CHART")
    search = owner.page.get_by_placeholder("metrics.rmse", exact=False)
    search.fill("")  # the table keeps the last filter; show every run
    search.press("Enter")
    owner.page.wait_for_function(
        "document.querySelectorAll('.js-plotly-plot path.js-line').length >= 6", timeout=30_000
    )
    owner.check("runs_charts", "brave-owl (accuracy)", "calm-fox (loss)", "swift-hare (accuracy)")


def test_compare_runs(owner, logged):
    runs = quote(json.dumps(list(logged.runs.values())))
    experiments = quote(json.dumps([logged.experiment_id]))
    owner.open(f"/compare-runs?runs={runs}&experiments={experiments}")
    owner.check("compare_runs", "brave-owl", "calm-fox", "swift-hare", "learning_rate")


def test_autolog_run_shows_its_logged_model_and_estimator(owner, logged):
    owner.open(f"/experiments/{logged.autolog_experiment_id}/runs/{logged.autolog_run_id}")
    owner.check("run_overview_autolog", "iris-logreg", "max_iter", "training_accuracy_score")
    owner.open(f"/experiments/{logged.autolog_experiment_id}/runs/{logged.autolog_run_id}/artifacts")
    owner.check("run_artifacts_autolog", "estimator.html")


def test_registered_models_list(owner, logged):
    owner.open("/models")
    owner.check("models_list", logged.model_name)


def test_registered_model_page(owner, logged):
    owner.open(f"/models/{logged.model_name}")
    owner.check("registered_model", logged.model_name, "Version 2", "champion")


def test_model_version_page(owner, logged):
    owner.open(f"/models/{logged.model_name}/versions/2")
    owner.check("model_version", "Version 2", "champion", "validated", "iris-logreg")


def test_logged_models(owner, logged):
    owner.open(f"/experiments/{logged.autolog_experiment_id}/models")
    owner.check("experiment_logged_models", "model")
    owner.open(f"/experiments/{logged.autolog_experiment_id}/models/{logged.logged_model_id}")
    owner.check("logged_model_detail", "model", "iris-logreg")


def test_genai_pages_show_their_own_empty_states(owner, logged):
    owner.open(f"/experiments/{logged.experiment_id}")
    owner.check("experiment_overview", logged.experiment_name)
    owner.open(f"/experiments/{logged.experiment_id}/traces")
    owner.check("experiment_traces", "Traces")
