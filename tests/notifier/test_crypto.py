from __future__ import annotations

import pytest

from shared.core.crypto import SecretBox, SecretDecryptionError


def test_round_trip_json_without_plaintext_in_token():
    box = SecretBox([SecretBox.generate_key()])
    token = box.encrypt_json({"url": "https://hooks.slack.com/services/T/B/xyz", "password": "hunter2"})
    assert "hunter2" not in token and "hooks.slack.com" not in token
    assert box.decrypt_json(token) == {"url": "https://hooks.slack.com/services/T/B/xyz", "password": "hunter2"}


def test_rotation_new_key_encrypts_all_keys_decrypt():
    old_key, new_key = SecretBox.generate_key(), SecretBox.generate_key()
    old_token = SecretBox([old_key]).encrypt_json({"secret": "whsec_old"})

    rotating = SecretBox([new_key, old_key])
    assert rotating.decrypt_json(old_token) == {"secret": "whsec_old"}
    rotated = rotating.rotate(old_token)

    # After rotation the old key can be dropped.
    assert SecretBox([new_key]).decrypt_json(rotated) == {"secret": "whsec_old"}
    with pytest.raises(SecretDecryptionError):
        SecretBox([old_key]).decrypt(rotated)


def test_wrong_key_or_tampered_token_fails_without_leaking():
    box = SecretBox([SecretBox.generate_key()])
    token = box.encrypt(b"smtp-password")
    with pytest.raises(SecretDecryptionError) as wrong_key:
        SecretBox([SecretBox.generate_key()]).decrypt(token)
    assert "smtp-password" not in str(wrong_key.value)
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(SecretDecryptionError):
        box.decrypt(tampered)
    with pytest.raises(SecretDecryptionError):
        box.rotate(tampered)


def test_keys_stay_out_of_repr():
    key = SecretBox.generate_key()
    assert key not in repr(SecretBox([key]))
    with pytest.raises(ValueError):
        SecretBox([])
