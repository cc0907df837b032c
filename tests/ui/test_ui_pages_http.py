"""The UI's page, bundles and project choice over HTTP (the browser tests cover what they render)."""

from __future__ import annotations

import re
import uuid

from services.tracking.api.mlflow_ui import BUILD_DIR
from shared.db.models import Organization
from tests import factories
from tests.ui.signin import SAME_ORIGIN, sign_in


def test_ui_page_sends_strangers_to_sign_in_keeping_where_they_were(client):
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == "/login?next=%2F"


def test_ui_page_is_mlflows_with_the_tessera_box(client, tenant):
    sign_in(client, tenant.email)
    page = client.get("/")
    assert page.status_code == 200
    assert "<title>MLflow</title>" in page.text and 'id="root"' in page.text
    assert tenant.email in page.text and "Sign out" in page.text
    assert page.headers["cache-control"] == "no-store"


def test_bundles_are_gzipped_and_cached_for_a_year(client):
    assert client.get("/static-files/manifest.json").status_code == 200
    index_html = (BUILD_DIR / "index.html").read_text()
    bundle_path = re.search(r'src="(static-files/static/js/main\.[0-9a-f]+\.js)"', index_html).group(1)
    bundle = client.get(f"/{bundle_path}", headers={"Accept-Encoding": "gzip"})
    assert bundle.status_code == 200
    assert bundle.headers["content-encoding"] == "gzip"
    assert bundle.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert int(bundle.headers["content-length"]) < len(bundle.content) / 2
    again = client.get(f"/{bundle_path}", headers={"Accept-Encoding": "gzip", "If-None-Match": bundle.headers["etag"]})
    assert again.status_code == 304
    assert client.get("/static-files/../../__init__.py").status_code == 404


def test_project_choice_decides_where_mlflow_registry_calls_go(client, db_session, tenant):
    other = factories.make_project(db_session, db_session.get(Organization, tenant.org_id), slug="fraud")
    for project in (tenant.project_id, other.id):
        created = client.post(
            "/api/2.0/mlflow/registered-models/create",
            json={"name": f"model-{project.hex[:6]}"},
            headers={**tenant.headers, "X-Tessera-Project": str(project)},
        )
        assert created.status_code == 200, created.text
    sign_in(client, tenant.email)

    def names() -> set[str]:
        found = client.get("/ajax-api/2.0/mlflow/registered-models/search").json()
        return {m["name"] for m in found.get("registered_models", [])}

    assert names() == {f"model-{tenant.project_id.hex[:6]}"}
    page = client.get("/project")
    assert f"{other.name}" in page.text
    token = client.cookies.get("tessera_csrf")
    assert client.post("/project", data={"project_id": str(other.id)}, headers=SAME_ORIGIN).status_code == 403
    chosen = client.post(
        "/project", data={"project_id": str(other.id), "csrf_token": token}, headers=SAME_ORIGIN, follow_redirects=False
    )
    assert chosen.status_code == 303
    assert names() == {f"model-{other.id.hex[:6]}"}
    stranger = client.post("/project", data={"project_id": str(uuid.uuid4()), "csrf_token": token}, headers=SAME_ORIGIN)
    assert stranger.status_code == 404
