"""The `tessera` command: run the platform, migrate, seed, and bootstrap users and API keys."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import typer
from rich.console import Console
from rich.table import Table

from shared.core.settings import Settings
from tessera.platform import SERVICES

app = typer.Typer(help="Tessera: an MLOps platform.", no_args_is_help=True, add_completion=False)
console = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    return Settings()


@app.command()
def migrate() -> None:
    """Bring the database schema to the latest migration."""
    from shared.db.migrate import upgrade

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    console.print(f"[green]Database at the latest migration[/green] ({_redact(settings.database_url)})")


@app.command()
def serve(
    service: str = typer.Argument("all", help=f"One of {', '.join(SERVICES)}, or 'all' in one process"),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on"),
    port: int = typer.Option(8000, help="Port to listen on"),
    workers: int = typer.Option(1, help="uvicorn worker processes"),
) -> None:
    """Serve one service, or all of them in one process."""
    import uvicorn

    from shared.db.migrate import is_at_head

    settings = _settings()
    if not is_at_head(settings.database_url):
        err.print("[red]The database is not at the latest migration: run `tessera migrate` first.[/red]")
        raise typer.Exit(2)
    if service != "all" and service not in SERVICES:
        err.print(f"[red]Unknown service {service!r}[/red]")
        raise typer.Exit(2)
    uvicorn.run(
        f"tessera.asgi:{service}",
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        access_log=False,
    )


def _celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "shared.core.celery_app:celery_app", *args]


@app.command()
def worker(concurrency: int = typer.Option(2, help="Worker processes")) -> None:
    """Run a Celery worker (all queues)."""
    os.execvp(sys.executable, _celery("worker", f"--concurrency={concurrency}", "--loglevel=INFO"))


@app.command()
def beat() -> None:
    """Run Celery beat, which schedules drift checks, the outbox relay and delivery sweeps."""
    os.execvp(sys.executable, _celery("beat", "--loglevel=INFO"))


@app.command()
def up(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on"),
    port: int = typer.Option(8000, help="Port of the API"),
) -> None:
    """Migrate, then run all five services, a worker and beat until Ctrl-C."""
    settings = _settings()
    migrate()
    base = f"http://{host}:{port}"
    children = {
        "api": subprocess.Popen([sys.executable, "-m", "tessera", "serve", "all", "--host", host, "--port", str(port)]),
        "worker": subprocess.Popen(_celery("worker", "--concurrency=2", "--loglevel=WARNING")),
        "beat": subprocess.Popen(_celery("beat", "--loglevel=WARNING")),
    }
    _wait_for_api(base, children["api"])
    table = Table(title="Tessera is running", show_lines=False)
    table.add_column("service")
    table.add_column("listens at")
    table.add_column("API docs")
    for name in SERVICES:
        table.add_row(name, base, f"{base}/docs#/{name}")
    table.add_row("mlflow clients", f"MLFLOW_TRACKING_URI={base}", "")
    table.add_row("worker + beat", f"broker {_redact(settings.broker_url)}", "")
    console.print(table)
    console.print(f"data: {settings.data_dir}   database: {_redact(settings.database_url)}")
    console.print("Populate it with [bold]tessera seed[/bold]; stop with Ctrl-C.")
    _supervise(children)


def _wait_for_api(base: str, proc: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err.print("[red]The API process exited during start-up.[/red]")
            raise typer.Exit(1)
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    err.print("[yellow]The API is slow to start; carrying on.[/yellow]")


def _supervise(children: dict[str, subprocess.Popen]) -> None:
    stopping = False

    def _stop(*_args) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    exit_code = 0
    while not stopping:
        for name, proc in children.items():
            if proc.poll() is not None:
                err.print(f"[red]{name} exited with code {proc.returncode}; stopping everything.[/red]")
                stopping, exit_code = True, 1
        time.sleep(0.5)
    console.print("Stopping…")
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in children.values():
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    raise typer.Exit(exit_code)


def _redact(url: str) -> str:
    """Never print a password that sits in a URL."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def main() -> None:
    app()


if __name__ == "__main__":
    main()
