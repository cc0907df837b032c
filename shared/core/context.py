"""Per-request facts (request id, client address, user agent) that logs and the audit trail need."""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    method: str
    path: str
    ip_address: str | None
    user_agent: str | None


_current: ContextVar[RequestContext | None] = ContextVar("tessera_request", default=None)


def current_request() -> RequestContext | None:
    return _current.get()


def set_request(ctx: RequestContext) -> Token[RequestContext | None]:
    return _current.set(ctx)


def reset_request(token: Token[RequestContext | None]) -> None:
    _current.reset(token)
