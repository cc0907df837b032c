"""The `tessera` command: run the platform, migrate, seed, and bootstrap users and API keys."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, suppress

import typer
from rich.console import Console
from rich.table import Table

from services.monitor.cli import app as drift_app
from shared.core.settings import InvalidSettings, Settings, listening_url, load_settings
from tessera import SERVICES
from tessera.commands import register as register_daily_commands

app = typer.Typer(help="Tessera: an MLOps platform.", no_args_is_help=True, add_completion=False)
console = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    return load_settings()


@app.callback()
def _check_settings() -> None:
    """Runs before every command: a bad setting stops it here, in one line, before anything starts
    (serve, worker and beat read the same environment)."""
    try:
        load_settings()
    except InvalidSettings as exc:
        # Plain print: rich would wrap the line and read brackets in it as markup.
        print(exc, file=sys.stderr)
        raise typer.Exit(2) from None


@app.command()
def migrate() -> None:
    """Bring the database schema to the latest migration."""
    from shared.db.migrate import upgrade

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    console.print(f"[green]Database at the latest migration[/green] ({_redact(settings.database_url)})")


def _listening(host: str | None, port: int | None) -> Settings:
    """The settings with the address the API listens on (options over TESSERA_HOST/TESSERA_PORT); the public
    URL follows it unless TESSERA_PUBLIC_URL is set. Also put in the environment, which the processes
    started from here (uvicorn's workers, and `up`'s worker and beat) read their settings from."""
    configured = _settings()
    host, port = host or configured.host, port or configured.port
    os.environ["TESSERA_HOST"], os.environ["TESSERA_PORT"] = host, str(port)
    return load_settings()


@app.command()
def serve(
    service: str = typer.Argument("all", help=f"One of {', '.join(SERVICES)}, or 'all' in one process"),
    host: str | None = typer.Option(None, help="Interface to listen on [default: TESSERA_HOST or 127.0.0.1]"),
    port: int | None = typer.Option(None, help="Port to listen on [default: TESSERA_PORT or 8000]"),
    workers: int = typer.Option(1, help="uvicorn worker processes"),
) -> None:
    """Serve one service, or all of them in one process."""
    import uvicorn

    from shared.db.migrate import is_at_head

    settings = _listening(host, port)
    if not is_at_head(settings.database_url):
        err.print("[red]The database is not at the latest migration: run `tessera migrate` first.[/red]")
        raise typer.Exit(2)
    if service != "all" and service not in SERVICES:
        err.print(f"[red]Unknown service {service!r}[/red]")
        raise typer.Exit(2)
    uvicorn.run(
        f"tessera.asgi:{service}",
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        access_log=False,
    )


def _celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "tessera.worker:celery_app", *args]


@app.command()
def worker(
    concurrency: int = typer.Option(2, help="Worker processes"),
    queues: str = typer.Option(
        "", help="Comma-separated queues to consume, e.g. notifier.dispatch for a delivery worker (default: all)"
    ),
) -> None:
    """Run a Celery worker (all queues unless --queues)."""
    arguments = ["worker", f"--concurrency={concurrency}", "--loglevel=INFO"]
    if queues:
        arguments += ["--queues", queues]
    os.execvp(sys.executable, _celery(*arguments))


@app.command()
def beat() -> None:
    """Run Celery beat, which schedules drift checks, the outbox relay and delivery sweeps."""
    os.execvp(sys.executable, _celery("beat", "--loglevel=INFO"))


@app.command()
def up(
    host: str | None = typer.Option(None, help="Interface to listen on [default: TESSERA_HOST or 127.0.0.1]"),
    port: int | None = typer.Option(None, help="Port of the API [default: TESSERA_PORT or 8000]"),
) -> None:
    """Migrate, then run all five services, a worker and beat until Ctrl-C (or SIGTERM), which stops them all,
    model servers included."""
    # SIGTERM during start-up stops what was started, as Ctrl-C does (`_supervise` takes over later).
    signal.signal(signal.SIGTERM, _interrupt)
    settings = _listening(host, port)
    data_lock = _claim_data_dir(settings)
    _require_free_port(settings.host, settings.port)
    migrate()
    base = listening_url(settings.host, settings.port)
    commands = {
        "api": [sys.executable, "-m", "tessera", "serve", "all"],
        "worker": _celery("worker", "--concurrency=2", "--loglevel=WARNING"),
        "beat": _celery("beat", "--loglevel=WARNING"),
    }
    children = {name: _start(command) for name, command in commands.items()}
    try:
        _wait_for_api(base, children["api"])
        table = Table(title="Tessera is running", show_lines=False)
        table.add_column("service")
        # Folded, not cut with an ellipsis: a log file or a pipe gets rich's 80 columns.
        table.add_column("listens at", overflow="fold")
        table.add_column("API docs", overflow="fold")
        for name in SERVICES:
            table.add_row(name, base, f"{base}/docs#/{name}")
        table.add_row("web UI (MLflow's)", f"{base}/", "sign in with a user's email and password")
        table.add_row("mlflow clients", f"MLFLOW_TRACKING_URI={base}", "")
        table.add_row("console (browser)", f"{base}/console/", "sign in at /login")
        table.add_row("worker + beat", f"broker {_redact(settings.broker_url)}", "")
        console.print(table)
        console.print(f"public URL (links in alerts and notifications): {settings.public_url}")
        console.print(f"data: {settings.data_dir}   database: {_redact(settings.database_url)}")
        console.print("Populate it with [bold]tessera seed[/bold]; stop with Ctrl-C.")
        exit_code = _supervise(commands, children)
    finally:
        _stop_all(children, settings)
        data_lock.truncate(0)
        data_lock.close()
    raise typer.Exit(exit_code)


def _interrupt(*_args) -> None:
    raise KeyboardInterrupt


def _claim_data_dir(settings: Settings):
    """Hold a lock on the data folder for as long as this `up` runs; a second one on it stops here."""
    import fcntl

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = (settings.data_dir / "up.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        err.print(
            f"[red]The data folder {settings.data_dir} is in use by another `tessera up`; nothing started.[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    # What else runs on this data folder (`tessera seed` printing where to sign in) reads where it serves.
    lock.write(settings.public_url)
    lock.flush()
    return lock


def _serving_url(settings: Settings) -> str:
    """The public URL of the `tessera up` running on this data folder (it writes it into its lock, and
    empties the lock when it stops), else the one the settings give."""
    with suppress(OSError):
        return (settings.data_dir / "up.lock").read_text().strip() or settings.public_url
    return settings.public_url


def _require_free_port(host: str, port: int) -> None:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            err.print(
                f"[red]Cannot listen on {host}:{port} ({exc.strerror}); choose another with --port.[/red]",
                soft_wrap=True,
            )
            raise typer.Exit(1) from None


def _start(command: list[str]) -> subprocess.Popen:
    # Each child leads a process group of its own, so a stop reaches its own children too (uvicorn's and
    # Celery's pool processes), and a Ctrl-C in the terminal reaches only `up`, which stops them in order.
    return subprocess.Popen(command, start_new_session=True)


def _stop_all(children: dict[str, subprocess.Popen], settings: Settings) -> None:
    """SIGTERM every child's process group, SIGKILL what is left after 15 s; then the model servers the
    worker started (they run in sessions of their own, to outlive a worker restart)."""
    console.print("Stopping…")
    for proc in children.values():
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in children.values():
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
    _stop_model_servers(settings)


def _signal_group(proc: subprocess.Popen, signum: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def _stop_model_servers(settings: Settings) -> None:
    from services.deployer.domain import rollouts
    from shared.db.session import get_database

    manager = rollouts.process_manager(settings)
    # Every server this platform started carries its owner, recorded or not (a worker stopped while it was
    # starting one never recorded it): stopped first, as this needs no database.
    stopped = manager.stop_owned()
    try:
        # Then any recorded server started without an owner (by an earlier release).
        with get_database(settings.database_url).session_scope() as session:
            stopped += rollouts.stop_recorded_servers(session, manager)
    except Exception as exc:  # whatever happened, `up` still exits; say what may be left
        err.print(f"[yellow]Model servers started by an earlier release may still run: {exc}[/yellow]")
    if stopped:
        console.print(f"Stopped {stopped} model server(s); they start again with the platform.")


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


# A child that keeps crashing this soon after its start is given up on (a broken install, a port in use).
_QUICK_EXIT_S = 10.0
_MAX_QUICK_EXITS = 5


def _supervise(commands: dict[str, list[str]], children: dict[str, subprocess.Popen]) -> int:
    """Restart a child that exits (as compose's `restart: unless-stopped` does) until Ctrl-C or SIGTERM;
    returns the exit code for `up`."""
    stopping = False

    def _stop(*_args) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    started = {name: time.monotonic() for name in children}
    quick_exits = dict.fromkeys(children, 0)
    exit_code = 0
    while not stopping:
        for name, proc in children.items():
            if proc.poll() is None:
                continue
            quick_exits[name] = quick_exits[name] + 1 if time.monotonic() - started[name] < _QUICK_EXIT_S else 1
            if quick_exits[name] >= _MAX_QUICK_EXITS:
                err.print(f"[red]{name} keeps exiting (code {proc.returncode}); stopping everything.[/red]")
                stopping, exit_code = True, 1
                break
            delay = 2 ** (quick_exits[name] - 1)
            err.print(f"[yellow]{name} exited with code {proc.returncode}; restarting in {delay} s.[/yellow]")
            time.sleep(delay)
            children[name] = _start(commands[name])
            started[name] = time.monotonic()
        time.sleep(0.5)
    return exit_code


# --- bootstrap: users, API keys and demo data ------------------------------------------------------------

user_app = typer.Typer(help="Create users (for scripts that set a platform up).", no_args_is_help=True)
api_key_app = typer.Typer(help="Create API keys for machines and the mlflow client.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(api_key_app, name="api-key")
# `tessera drift REFERENCE CURRENT`: the monitor's drift engine, offline.
app.add_typer(drift_app)
# `tessera deployments|monitors|channels|rules|alerts …`: the REST API of a running Tessera, from a terminal.
register_daily_commands(app)


def _migrated_database():
    from shared.db.migrate import is_at_head
    from shared.db.session import get_database

    settings = _settings()
    if not is_at_head(settings.database_url):
        err.print("[red]The database is not at the latest migration: run `tessera migrate` first.[/red]")
        raise typer.Exit(2)
    return get_database(settings.database_url)


@contextmanager
def _unit_of_work():
    """One committed transaction; a refused request prints its reason and exits 1 (nothing is written)."""
    from shared.core.errors import TesseraError

    try:
        with _migrated_database().session_scope() as session:
            yield session
    except TesseraError as exc:
        err.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None


@user_app.command("create")
def user_create(
    email: str = typer.Option(..., help="Login email"),
    password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True, help="8+ characters"),
    org: str | None = typer.Option(None, help="Organization slug: created with the user as owner, or joined"),
    role: str = typer.Option("member", help="Role when joining an existing organization"),
    name: str | None = typer.Option(None, help="Full name"),
) -> None:
    """Create a user (re-running with the same password is fine), optionally in an organization."""
    from services.registry.domain.bootstrap import ensure_user

    with _unit_of_work() as session:
        outcome = ensure_user(session, email=email, password=password, full_name=name, org_slug=org, role=role)
        email, created = outcome.user.email, outcome.created_user
        org_line = (
            f"organization {outcome.organization.slug} ({'created, ' if outcome.created_organization else ''}"
            f"role {outcome.role})"
            if outcome.organization
            else "no organization"
        )
    console.print(f"{'Created' if created else 'Found'} user {email}; {org_line}")


@api_key_app.command("create")
def api_key_create(
    email: str = typer.Option(..., help="The user the key acts for"),
    scopes: str = typer.Option(..., help="Comma-separated, e.g. tracking:write,registry:read (or admin)"),
    org: str | None = typer.Option(None, help="Organization slug (needed if the user has several)"),
    project: str | None = typer.Option(None, help="Limit the key to this project (slug or id)"),
    expires_in_days: int | None = typer.Option(None, help="Expire after N days (default: never)"),
    name: str | None = typer.Option(None, help="A label for the key"),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object; the key is in its `key` field"),
) -> None:
    """Create an API key and print it once (only its digest is stored)."""
    import json

    from services.registry.domain.bootstrap import create_key_for

    with _unit_of_work() as session:
        row, key = create_key_for(
            session,
            email=email,
            scopes=[s.strip() for s in scopes.split(",") if s.strip()],
            org_slug=org,
            project=project,
            expires_in_days=expires_in_days,
            name=name,
        )
        facts = {
            "key": key,
            "id": str(row.id),
            "prefix": row.prefix,
            "name": row.name,
            "scopes": row.scopes,
            "organization_id": str(row.organization_id),
            "project_id": str(row.project_id) if row.project_id else None,
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        }
    if as_json:
        print(json.dumps(facts))
    else:
        # The key alone on stdout, so `KEY=$(tessera api-key create ...)` works; the rest on stderr.
        print(key)
        err.print(f"API key {row.prefix} for {email} (scopes {', '.join(row.scopes)}); it is not shown again.")


@app.command()
def seed(
    password: str = typer.Option("tessera-demo", help="Password of the demo users it creates"),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object: owner sign-in and API key"),
) -> None:
    """Populate a fresh platform with demo data (idempotent: a second run changes nothing)."""
    import json

    from shared.core.artifacts import get_artifact_store
    from tessera.seed import seed_demo

    with _unit_of_work() as session:
        report = seed_demo(session, get_artifact_store(_settings()), password=password)
    owner_password = next(secret for email, _, secret in report.logins if email == report.owner_email)
    if as_json:
        owner = {"email": report.owner_email, "password": owner_password}
        sign_in = f"{_serving_url(_settings())}/login"
        print(json.dumps({"owner": owner, "api_key": report.api_key, "sign_in": sign_in, "created": report.created}))
        return
    for line in report.created:
        console.print(f"created {line}")
    if not report.created:
        console.print("Nothing to do: the demo data is already there.")
    table = Table(title="Seeded logins (organization acme)")
    table.add_column("email")
    table.add_column("role")
    table.add_column("password")
    for login_email, role, login_password in report.logins:
        table.add_row(login_email, role, login_password or "(existing account, unchanged)")
    console.print(table)
    console.print(
        f"Sign in to the web UI at {_serving_url(_settings())}/ as the owner: "
        f"{report.owner_email} / {owner_password or '(unchanged)'}",
        soft_wrap=True,
    )
    if report.api_key:
        console.print("The owner's API key (every scope; shown only now):", soft_wrap=True)
        print(report.api_key)
    else:
        console.print(
            f"Another API key: tessera api-key create --email {report.owner_email} --scopes admin", soft_wrap=True
        )


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
