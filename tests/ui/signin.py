"""Signing a test client in through /login, as a browser's form does."""

from __future__ import annotations

import re

from tests import factories

BASE = "http://testserver"
SAME_ORIGIN = {"Origin": BASE, "Sec-Fetch-Site": "same-origin"}


def csrf_from_login_page(client) -> str:
    page = client.get("/login")
    assert page.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert client.cookies.get("tessera_csrf") == token
    return token


def sign_in(client, email: str, password: str = factories.DEFAULT_PASSWORD, next_url: str = "/", **headers):
    token = csrf_from_login_page(client)
    return client.post(
        "/login",
        data={"email": email, "password": password, "next": next_url, "csrf_token": token},
        headers={**SAME_ORIGIN, **headers},
        follow_redirects=False,
    )
