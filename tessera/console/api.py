"""The console's way to the platform: the native REST API, called in-process over ASGI as the browser's user.

Why the API and not the domain functions: every page then gets exactly what a script would get — the same
authorization (roles, tenancy, API-key scopes), validation messages, one audit row per change, one commit
per request and the events it sends — with no second copy of any rule in the console. Why in-process: the
console is mounted in the very app that serves the API (`tessera up`, `serve all`), so a call is a function
call through the ASGI stack (about a millisecond), not a network round trip.

The caller's credentials travel with each call (the session cookie, or an Authorization header), and so do
the headers cross-site-request protection looks at (Origin, Sec-Fetch-Site, the CSRF token), so the API
judges a console form post exactly as it judges the same post sent straight to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import Request

from shared.core.browser_session import CSRF_HEADER

# What the API needs to know who is asking and whether the request came from the page itself.
_FORWARDED = ("authorization", "cookie", "origin", "referer", "sec-fetch-site", "user-agent", "x-tessera-project")


@dataclass
class ApiError(Exception):
    status: int
    code: str
    message: str
    # The request field the API named in its error (for showing the message next to that field).
    field: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_page_token: str | None = None


@dataclass
class Api:
    request: Request
    csrf_token: str | None = None
    _client: httpx.AsyncClient | None = field(default=None, repr=False)

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {name: value for name in _FORWARDED if (value := self.request.headers.get(name))}
            token = self.csrf_token or self.request.headers.get(CSRF_HEADER)
            if token:
                headers[CSRF_HEADER] = token
            peer = self.request.client
            transport = httpx.ASGITransport(
                app=self.request.app,
                # The audit trail records the browser's address, not the console's.
                client=(peer.host, peer.port) if peer else ("127.0.0.1", 0),
            )
            base = str(self.request.base_url).rstrip("/")
            self._client = httpx.AsyncClient(transport=transport, base_url=base, headers=headers, timeout=60)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.client.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise _error(response)
        if response.status_code == 204 or not response.content:
            return None
        if "json" not in response.headers.get("content-type", ""):
            return response.text
        return response.json()

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, params={k: v for k, v in params.items() if v not in (None, "")})

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.call("POST", path, json=body)

    async def patch(self, path: str, body: Any) -> Any:
        return await self.call("PATCH", path, json=body)

    async def delete(self, path: str) -> Any:
        return await self.call("DELETE", path)

    async def page(self, path: str, *, page_token: str | None = None, max_results: int = 50, **params: Any) -> Page:
        """One page of a list. The native envelope is {"items", "next_page_token"}; older routes answer
        {"<things>": [...], "next_page_token"} or a bare list, read here the same way."""
        body = await self.get(path, page_token=page_token, max_results=max_results, **params)
        if isinstance(body, list):
            return Page(body)
        items = body.get("items")
        if items is None:
            items = next((value for value in body.values() if isinstance(value, list)), [])
        return Page(items, body.get("next_page_token"))


def _error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        return ApiError(response.status_code, "HTTP_ERROR", response.text[:300] or response.reason_phrase)
    if not isinstance(body, dict):
        return ApiError(response.status_code, "HTTP_ERROR", str(body)[:300])
    problems = (body.get("details") or {}).get("errors") or []
    field_name = None
    message = body.get("message") or body.get("detail") or response.reason_phrase
    if problems:
        loc = [part for part in problems[0].get("loc", []) if part not in ("body", "query", "path")]
        field_name = str(loc[0]) if loc else None
        message = problems[0].get("msg") or message
    return ApiError(response.status_code, body.get("error_code", "HTTP_ERROR"), str(message), field_name)
