"""How the daily-work commands print: one table renderer, one record view, JSON for scripts, and a
spinner (with a bar when the server reports progress) while waiting for long work."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from tessera.commands.api import CommandError

# A column: its header, and the item's key or a function of the item.
Column = tuple[str, str | Callable[[dict[str, Any]], Any]]


def stdout() -> Console:
    # Made when printing, so the terminal's (or the test runner's) current width and streams apply.
    return Console(soft_wrap=False)


def stderr() -> Console:
    return Console(stderr=True, soft_wrap=True)


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{key}={cell(item)}" for key, item in value.items())
    if isinstance(value, list):
        return ", ".join(cell(item) for item in value)
    text = str(value)
    # ISO timestamps read better to the second, without the offset (the API answers in UTC).
    if len(text) >= 19 and text[4] == "-" and text[10] == "T":
        return text[:19].replace("T", " ")
    return text


def _value(item: dict[str, Any], getter: str | Callable[[dict[str, Any]], Any]) -> Any:
    return getter(item) if callable(getter) else item.get(getter)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def show_items(items: Sequence[dict[str, Any]], columns: Sequence[Column], *, as_json: bool, title: str) -> None:
    """A list as a table (or, with --json, as a JSON array of the API's items)."""
    if as_json:
        print_json(list(items))
        return
    if not items:
        stderr().print(f"No {title.lower()}.")
        return
    table = Table(title=title, title_justify="left")
    for header, _ in columns:
        # Ids and names are copied into the next command: never cut, folded onto a second line at worst.
        table.add_column(header, overflow="fold")
    for item in items:
        table.add_row(*(cell(_value(item, getter)) for _, getter in columns))
    stdout().print(table)


def show_record(record: dict[str, Any], fields: Sequence[Column], *, as_json: bool, title: str) -> None:
    """One row as a two-column table of fields (or, with --json, the API's object)."""
    if as_json:
        print_json(record)
        return
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for header, getter in fields:
        table.add_row(header, cell(_value(record, getter)))
    stdout().print(table)


def wait_until(
    what: str,
    probe: Callable[[], dict[str, Any]],
    finished: Callable[[dict[str, Any]], bool],
    *,
    timeout: float,
    status: Callable[[dict[str, Any]], str],
    fraction: Callable[[dict[str, Any]], float | None] = lambda _: None,
    every: float = 0.5,
) -> dict[str, Any]:
    """Poll `probe` until `finished` says so, showing `what`, the current status and (when known) a bar on
    stderr; the last answer. Past `timeout` seconds, a CommandError."""
    deadline = time.monotonic() + timeout
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr(), transient=True) as progress:
        task = progress.add_task(what, total=None)
        while True:
            current = probe()
            share = fraction(current)
            progress.update(
                task,
                description=f"{what}: {status(current)}",
                completed=share or 0.0,
                total=None if share is None else 1.0,
            )
            if finished(current):
                return current
            if time.monotonic() > deadline:
                raise CommandError(f"Timed out after {timeout:.0f} s waiting for {what} (now {status(current)})")
            time.sleep(every)
