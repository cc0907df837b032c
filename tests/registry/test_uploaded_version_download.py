"""Versions uploaded through the native registry API load with the unchanged mlflow client
(`models:/<name>/<version>` reads `registry/...` paths through the proxied artifact API), and only for
callers who can read the model's project."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests

from tests import factories
from tests.conftest import point_mlflow_at


def _upload_version(url: str, tenant: factories.Tenant, name: str, model_dir: Path) -> dict:
    created = requests.post(
        f"{url}/api/v1/projects/{tenant.project_id}/models", json={"name": name}, headers=tenant.headers, timeout=10
    )
    assert created.status_code == 201, created.text
    files = [
        ("files", (path.relative_to(model_dir).as_posix(), path.read_bytes()))
        for path in sorted(model_dir.rglob("*"))
        if path.is_file()
    ]
    uploaded = requests.post(
        f"{url}/api/v1/models/{created.json()['id']}/versions/upload", files=files, headers=tenant.headers, timeout=10
    )
    assert uploaded.status_code == 201, uploaded.text
    return uploaded.json()


def test_uploaded_version_loads_with_mlflow_and_stays_in_its_tenant(
    live_server, live_tenant, db, settings, tmp_path, monkeypatch
):
    from sklearn.linear_model import LinearRegression

    features = np.array([[1.0], [2.0], [3.0], [4.0]])
    regressor = LinearRegression().fit(features, 2 * features[:, 0] + 1)
    model_dir = tmp_path / "model"
    # Requirements given and cloudpickle: inferring requirements or importing skops would take seconds.
    mlflow.sklearn.save_model(
        regressor, model_dir, pip_requirements=["scikit-learn"], serialization_format="cloudpickle"
    )
    name = factories.unique("uploaded")
    version = _upload_version(live_server.url, live_tenant, name, model_dir)
    assert version["version"] == 1 and version["artifact_uri"].startswith("mlflow-artifacts:/registry/")

    point_mlflow_at(monkeypatch, live_server.url, live_tenant.api_key)
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/1")
    probe = np.array([[5.0], [7.5]])
    assert loaded.predict(probe) == pytest.approx(regressor.predict(probe))

    path = version["artifact_uri"].removeprefix("mlflow-artifacts:/")
    listing = f"{live_server.url}/api/2.0/mlflow-artifacts/artifacts"
    own = requests.get(listing, params={"path": path}, headers=live_tenant.headers, timeout=10)
    assert own.status_code == 200 and "MLmodel" in {f["path"] for f in own.json()["files"]}
    with db.session_scope() as session:
        stranger = factories.make_tenant(session, jwt_secret=settings.jwt_secret)
    assert requests.get(listing, params={"path": path}, headers=stranger.headers, timeout=10).status_code == 404
    assert requests.get(f"{listing}/{path}/MLmodel", headers=stranger.headers, timeout=10).status_code == 404
    # Written only through the registry's upload endpoint, even by the model's owner.
    overwrite = requests.put(
        f"{listing}/{path}/MLmodel", data=b"flavors: {}\n", headers=live_tenant.headers, timeout=10
    )
    assert overwrite.status_code == 400
    assert requests.delete(f"{listing}/{path}/MLmodel", headers=live_tenant.headers, timeout=10).status_code == 400
