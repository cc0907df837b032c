"""Secrets at rest (channel URLs, SMTP passwords, webhook signing keys), encrypted with Fernet.

Key rotation follows `cryptography`'s MultiFernet: the first key encrypts, every key decrypts.
To rotate: put a new key first, keep the old ones, run `SecretBox.rotate` over the stored tokens,
then drop the old keys. The keys come from settings (`encryption_keys`); nothing here reads them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from shared.core.errors import TesseraError


class SecretDecryptionError(TesseraError):
    """A token that none of the keys can open (wrong keys, or tampered). Carries no secret material."""


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one Fernet key is required")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def __repr__(self) -> str:
        # Keys must never reach logs or tracebacks through a repr.
        return "SecretBox(<keys hidden>)"

    @staticmethod
    def generate_key() -> str:
        return Fernet.generate_key().decode()

    def encrypt(self, plaintext: bytes) -> str:
        return self._fernet.encrypt(plaintext).decode()

    def decrypt(self, token: str) -> bytes:
        try:
            return self._fernet.decrypt(token.encode())
        except InvalidToken:
            raise SecretDecryptionError("secret cannot be decrypted with the configured keys") from None

    def encrypt_json(self, value: Any) -> str:
        return self.encrypt(json.dumps(value, separators=(",", ":")).encode())

    def decrypt_json(self, token: str) -> Any:
        return json.loads(self.decrypt(token))

    def rotate(self, token: str) -> str:
        """Re-encrypt `token` under the first key (keeps its original timestamp, as MultiFernet does)."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretDecryptionError("secret cannot be decrypted with the configured keys") from None
