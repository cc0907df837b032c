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


def test_runs_table(owner, logged):
    owner.open(f"/experiments/{logged.experiment_id}/runs")
    owner.check("runs_table", "brave-owl", "calm-fox", "swift-hare")
