"""The one HTTP path of the daily-work commands: connection options, requests, pages, and the one error line.

Every command talks to a running Tessera through `Api` (httpx); whatever goes wrong — an error answer, a
refused connection, a timeout — becomes a `CommandError`, which `CommandGroup` prints as one line before
exiting with status 1.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from typer.core import TyperGroup
from typer.exceptions import TyperException

DEFAULT_URL = "http://127.0.0.1:8000"
# The native API's largest page.
MAX_PAGE = 500

UrlOption = Annotated[
    str, typer.Option("--url", envvar="TESSERA_URL", help="Base URL of the Tessera API", show_envvar=True)
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="TESSERA_API_KEY", help="API key (tsk_…; `tessera seed` prints one)", show_default=False
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table (for scripts)")]
LimitOption = Annotated[int | None, typer.Option("--limit", min=1, help="Show at most this many", show_default=False)]


class CommandError(Exception):
    """A failure the user can act on, told in one line."""


class CommandGroup(TyperGroup):
    """A command group whose commands end every failure with one line on stderr and exit status 1."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (TyperException, typer.Exit, typer.Abort):  # usage errors, --help, Ctrl-C: Typer's own way
            raise
        except CommandError as error:
            _fail(str(error))
        except Exception as error:  # a bug still ends in one line, never a traceback
            _fail(f"{type(error).__name__}: {error}")


def _fail(message: str) -> None:
    Console(stderr=True, soft_wrap=True).print(f"Error: {' '.join(message.split())}", style="red", markup=False)
    raise typer.Exit(1)


def command_group(help_text: str) -> typer.Typer:
    return typer.Typer(cls=CommandGroup, help=help_text, no_args_is_help=True, add_completion=False)


def connected(command: Callable[..., None]) -> Callable[..., None]:
    """`command` with the options of every command that talks to Tessera, after its own: --url, --api-key
    and --json. It is called with an `Api` to that Tessera as `api` and the --json flag as `as_json`."""
    own = inspect.signature(command, eval_str=True).parameters.values()
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, default, annotation in (
            ("url", DEFAULT_URL, UrlOption),
            ("api_key", None, ApiKeyOption),
            ("as_json", False, JsonOption),
        )
    ]

    @functools.wraps(command)
    def run(*, url: str, api_key: str | None, as_json: bool, **arguments: Any) -> None:
        with Api(url, api_key) as api:
            command(api=api, as_json=as_json, **arguments)

    # Typer reads a command's options from its signature.
    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [parameter for parameter in own if parameter.name not in ("api", "as_json")] + shared
    )
    return run


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class Api:
    """A client of one Tessera's native API, authenticated by an API key."""

    def __init__(self, url: str, api_key: str | None, *, timeout: float = 60.0):
        self.url = url.rstrip("/")
        # Checked at the first request, so that what a command checks before it asks anything is told first.
        self._api_key = api_key
        self._timeout = timeout
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout)
        self._version_labels: dict[str, str] = {}

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if not self._api_key:
            raise CommandError("No API key: pass --api-key or set TESSERA_API_KEY (`tessera seed` prints one)")
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as error:
            reason = str(error).split("]")[-1].strip() or "connection failed"
            raise CommandError(
                f"Cannot reach Tessera at {self.url} ({reason}); is it running? Set --url or TESSERA_URL"
            ) from None
        except httpx.TimeoutException:
            raise CommandError(f"Tessera at {self.url} did not answer within {self._timeout:.0f} s") from None
        except httpx.HTTPError as error:
            raise CommandError(f"Request to {self.url} failed: {error}") from None
        if response.is_error:
            raise CommandError(_error_line(response))
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={name: value for name, value in params.items() if value is not None})

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        """POST a JSON body, or the given `data`/`files` (multipart)."""
        if body is not None:
            kwargs["json"] = body
        return self.request("POST", path, **kwargs)

    def pages(self, path: str, *, limit: int | None = None, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint, following `next_page_token`, stopping after `limit` items."""
        token, count = None, 0
        while True:
            size = MAX_PAGE if limit is None else min(MAX_PAGE, limit - count)
            page = self.get(path, **params, max_results=size, page_token=token)
            for item in page["items"]:
                yield item
                count += 1
                if limit is not None and count >= limit:
                    return
            token = page.get("next_page_token")
            if not token:
                return

    def items(self, path: str, *, limit: int | None = None, **params: Any) -> list[dict[str, Any]]:
        return list(self.pages(path, limit=limit, **params))

    def find(self, collection: str, ref: str, kind: str) -> dict[str, Any]:
        """One row of a collection named by its id or by its name (names must be unambiguous)."""
        if is_uuid(ref):
            return self.get(f"{collection}/{ref}")
        named = [item for item in self.pages(collection) if item.get("name") == ref]
        if not named:
            raise CommandError(f"No {kind} named {ref!r}")
        if len(named) > 1:
            raise CommandError(f"{len(named)} {kind}s are named {ref!r}; give the id")
        return named[0]

    def version_label(self, version_id: str | None) -> str:
        """`model:version` for a model version's id (looked up once per id)."""
        if version_id is None:
            return ""
        if version_id not in self._version_labels:
            try:
                version = self.get(f"/api/v1/model-versions/{version_id}")
                self._version_labels[version_id] = f"{version['model_name']}:{version['version']}"
            except CommandError:
                self._version_labels[version_id] = version_id
        return self._version_labels[version_id]


def _error_line(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "message" in body:
        return f"{body.get('error_code', 'ERROR')}: {body['message']} (HTTP {response.status_code})"
    text = response.text.strip()[:200] or response.reason_phrase
    return f"HTTP {response.status_code} from {response.request.method} {response.request.url.path}: {text}"
