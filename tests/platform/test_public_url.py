"""The public URL (the base of every link Tessera hands out) follows the address the API listens on, unless
TESSERA_PUBLIC_URL says otherwise. `tessera up --port` following it end to end is in test_up.py."""

from __future__ import annotations

import pytest

from shared.core.settings import Settings


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({}, "http://127.0.0.1:8000"),
        ({"TESSERA_PORT": "8123"}, "http://127.0.0.1:8123"),
        ({"TESSERA_HOST": "0.0.0.0", "TESSERA_PORT": "9000"}, "http://127.0.0.1:9000"),
        ({"TESSERA_HOST": "10.1.2.3"}, "http://10.1.2.3:8000"),
        ({"TESSERA_HOST": "::1", "TESSERA_PORT": "9000"}, "http://[::1]:9000"),
        ({"TESSERA_PORT": "8123", "TESSERA_PUBLIC_URL": "https://ml.example.com"}, "https://ml.example.com"),
    ],
)
def test_the_public_url_is_where_the_api_listens_unless_set(monkeypatch, tmp_path, environment, expected):
    for name in ("TESSERA_HOST", "TESSERA_PORT", "TESSERA_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    assert Settings(data_dir=tmp_path).public_url == expected
