"""Settings as people type them: list settings take JSON or comma-separated values; a bad value stops
every command with one line naming the variable, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet

from shared.core.settings import InvalidSettings, load_settings

FERNET_KEY_1, FERNET_KEY_2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("127.0.0.1", ["127.0.0.1"]),
        ("127.0.0.0/8,::1", ["127.0.0.0/8", "::1"]),
        (" 10.0.0.0/8 , hooks.internal ,", ["10.0.0.0/8", "hooks.internal"]),
        ('["127.0.0.1", "::1"]', ["127.0.0.1", "::1"]),
        ("", []),
    ],
)
def test_the_outbound_allowlist_takes_json_or_comma_separated_values(monkeypatch, tmp_path, typed, expected):
    monkeypatch.setenv("TESSERA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TESSERA_OUTBOUND_ALLOWLIST", typed)
    assert load_settings().outbound_allowlist == expected


@pytest.mark.parametrize("typed", [f"{FERNET_KEY_1},{FERNET_KEY_2}", f'["{FERNET_KEY_1}", "{FERNET_KEY_2}"]'])
def test_encryption_keys_take_json_or_comma_separated_values(monkeypatch, tmp_path, typed):
    monkeypatch.setenv("TESSERA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TESSERA_ENCRYPTION_KEYS", typed)
    assert load_settings().encryption_keys == [FERNET_KEY_1, FERNET_KEY_2]


@pytest.mark.parametrize(
    ("variable", "typed", "explained"),
    [
        ("TESSERA_OUTBOUND_ALLOWLIST", "127.0.0.0/33", "neither an IP address, a CIDR network"),
        ("TESSERA_OUTBOUND_ALLOWLIST", '["127.0.0.1"', "expected a JSON list of strings or comma-separated"),
        ("TESSERA_OUTBOUND_ALLOWLIST", '{"a": 1}', "valid list"),
        ("TESSERA_ENCRYPTION_KEYS", "not-a-key", "key 1 is not a Fernet key"),
        ("TESSERA_JWT_TTL_S", "an hour", "valid integer"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch, tmp_path, variable, typed, explained):
    monkeypatch.setenv("TESSERA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(variable, typed)
    with pytest.raises(InvalidSettings) as refused:
        load_settings()
    message = str(refused.value)
    assert "\n" not in message
    assert variable in message and explained in message
    if variable == "TESSERA_ENCRYPTION_KEYS":
        assert typed not in message  # secrets are never echoed


@pytest.mark.parametrize("command", [["up"], ["serve", "all"], ["worker"], ["migrate"], ["seed"]])
def test_every_command_stops_on_a_bad_setting_with_one_line(tmp_path, command):
    env = {key: value for key, value in os.environ.items() if not key.startswith("TESSERA_")}
    env["TESSERA_DATA_DIR"] = str(tmp_path / "data")
    env["TESSERA_OUTBOUND_ALLOWLIST"] = "127.0.0.0/33"
    done = subprocess.run(
        [sys.executable, "-m", "tessera", *command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "Invalid setting TESSERA_OUTBOUND_ALLOWLIST: '127.0.0.0/33' is neither an IP address, "
        "a CIDR network (10.0.0.0/8) nor a host name"
    ]
    assert not (tmp_path / "data" / "tessera.db").exists()  # nothing started, nothing migrated
