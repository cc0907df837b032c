"""Credentials: argon2 password hashes, short-lived JWTs, and API keys stored only as digests."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_password_hasher = PasswordHasher()

API_KEY_PREFIX = "tsk_"


def hash_password(password: str) -> str:
    return _password_hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _password_hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def password_stamp(password_hash: str | None) -> str:
    """A short fingerprint of the current password hash, carried in login tokens: changing the password
    changes it, so every token issued before the change stops working (no token table to keep)."""
    return hashlib.sha256((password_hash or "").encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TokenClaims:
    user_id: uuid.UUID
    expires: datetime
    password_stamp: str


def issue_token(user_id: uuid.UUID, password_hash: str | None, *, secret: str, ttl_s: int) -> tuple[str, datetime]:
    now = datetime.now(UTC)
    expires = now + timedelta(seconds=ttl_s)
    claims = {"sub": str(user_id), "exp": expires, "iat": now, "typ": "access", "pwd": password_stamp(password_hash)}
    return jwt.encode(claims, secret, algorithm="HS256"), expires


def decode_token(token: str, *, secret: str) -> TokenClaims | None:
    """The claims of a valid, unexpired token, else None."""
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp", "sub", "pwd"]})
        return TokenClaims(uuid.UUID(claims["sub"]), datetime.fromtimestamp(claims["exp"], UTC), str(claims["pwd"]))
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError):
        return None


def new_session_token() -> str:
    """The secret of a browser session (the `tessera_session` cookie): 256 random bits."""
    return secrets.token_urlsafe(32)


def digest_session_token(token: str) -> str:
    """Sessions are stored as SHA-256 digests; as with API keys, the token's entropy makes argon2 pointless."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class NewApiKey:
    key: str
    prefix: str
    digest: str


def generate_api_key() -> NewApiKey:
    """`tsk_<prefix>_<secret>`: the prefix is stored in clear to find the row, the whole key only as SHA-256.

    A plain digest (not argon2) is right here: the secret has 256 bits of entropy, so there is nothing to
    brute-force, and every API request verifies it on the hot path.
    """
    prefix = secrets.token_hex(6)
    key = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return NewApiKey(key=key, prefix=prefix, digest=digest_api_key(key))


def digest_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_api_key(candidate: str) -> str | None:
    """The prefix of a well-formed key, else None."""
    if not candidate.startswith(API_KEY_PREFIX):
        return None
    prefix, sep, rest = candidate[len(API_KEY_PREFIX) :].partition("_")
    if not sep or not rest or len(prefix) != 12:
        return None
    return prefix


def api_key_matches(key: str, digest: str) -> bool:
    return hmac.compare_digest(digest_api_key(key), digest)
