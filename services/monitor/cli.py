"""`tessera drift`: compare a current CSV/Parquet file against a reference, offline.

Mounted by the main CLI (`app.add_typer(monitor_cli.app)`); also runs on its own as
`python -m services.monitor.cli drift REFERENCE CURRENT`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

if TYPE_CHECKING:
    from services.monitor.domain.drift import ColumnSource, DriftReport, GroupProgress

from shared.core.settings import ENV_PREFIX, Settings

# A saved profile (see --save-profile) can stand in for the reference data.
PROFILE_SUFFIX = ".npz"

app = typer.Typer(add_completion=False, help="Offline data drift checks.")
console = Console()
# Progress goes to stderr, so `--json` output on stdout stays clean.
progress_console = Console(stderr=True)
MEMORY_ENV = f"{ENV_PREFIX}MONITOR_DRIFT_MEMORY_MB"


def _pairs(values: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, separator, setting = value.rpartition("=")
        if not separator or not name:
            raise typer.BadParameter(f"expected COLUMN=VALUE, got {value!r}", param_hint=option)
        pairs[name] = setting
    return pairs


@app.command()
def drift(
    reference: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help=f"Reference data (.csv/.parquet) or a saved profile ({PROFILE_SUFFIX})"
    ),
    current: Path = typer.Argument(..., exists=True, dir_okay=False, help="Current data (.csv/.parquet)"),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table"),
    html: Path | None = typer.Option(None, "--html", metavar="FILE", help="Write an HTML report to FILE"),
    drift_share: float = typer.Option(0.5, help="Share of drifted columns that means dataset drift"),
    method: str | None = typer.Option(None, help="Test for all columns (ks, wasserstein, chisquare, z, ...)"),
    num_method: str | None = typer.Option(None, help="Test for numerical columns"),
    cat_method: str | None = typer.Option(None, help="Test for categorical columns"),
    column_method: list[str] = typer.Option([], metavar="COLUMN=METHOD", help="Test for one column"),
    threshold: float | None = typer.Option(None, help="Threshold for all columns"),
    column_threshold: list[str] = typer.Option([], metavar="COLUMN=VALUE", help="Threshold for one column"),
    numerical: list[str] = typer.Option(
        [], metavar="COLUMN", help="Test COLUMN as numerical (else the current data's type decides)"
    ),
    categorical: list[str] = typer.Option(
        [], metavar="COLUMN", help="Test COLUMN as categorical (else the current data's type decides)"
    ),
    save_profile: Path | None = typer.Option(
        None, metavar="FILE", help="Save the reference profile to FILE for later checks"
    ),
    fail_on_drift: bool = typer.Option(False, help="Exit with status 1 when dataset drift is detected"),
    memory_mb: int = typer.Option(
        Settings.model_fields["monitor_drift_memory_mb"].default,
        envvar=MEMORY_ENV,
        min=64,
        metavar="MB",
        help="Peak memory to stay within: Parquet is read a group of columns at a time to fit it",
    ),
) -> None:
    """Compare CURRENT against REFERENCE column by column, with Evidently 0.7's default tests."""
    # The engine (numpy, pandas, pyarrow, scipy) is imported by the command that uses it, so every other
    # `tessera` command starts without it.
    from services.monitor.domain.drift import (
        ColumnType,
        DriftOptions,
        ProfileWriter,
        ReferenceProfile,
        bounded_drift_report,
        render_html,
    )

    try:
        thresholds = {name: float(value) for name, value in _pairs(column_threshold, "--column-threshold").items()}
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--column-threshold") from error
    try:
        options = DriftOptions(
            drift_share=drift_share,
            method=method,
            num_method=num_method,
            cat_method=cat_method,
            per_column_method=_pairs(column_method, "--column-method"),
            threshold=threshold,
            per_column_threshold=thresholds,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error

    # Named types win over the type each column gets from the current data (Evidently's inference).
    column_types = {name: ColumnType.NUMERICAL for name in numerical} | {
        name: ColumnType.CATEGORICAL for name in categorical
    }
    with ExitStack() as stack:
        if reference.suffix == PROFILE_SUFFIX:
            # Read lazily: each column's stored values are loaded when its group comes.
            reference_side: ColumnSource | ReferenceProfile = ReferenceProfile.read(
                stack.enter_context(reference.open("rb"))
            )
        else:
            reference_side = _source(reference)
        writer = None
        if save_profile is not None:
            rows = reference_side.row_count if isinstance(reference_side, ReferenceProfile) else reference_side.num_rows
            writer = stack.enter_context(ProfileWriter(stack.enter_context(save_profile.open("wb")), rows))
        # A bar on a terminal, unless the output is JSON for another program.
        progress = stack.enter_context(_group_progress()) if not json_out else None
        report = bounded_drift_report(
            reference_side,
            _source(current),
            memory_mb * 2**20,
            options,
            column_types=column_types,
            progress=progress,
            save_profile=writer,
        )

    if html is not None:
        html.write_text(render_html(report), encoding="utf-8")
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    else:
        _print_table(report)
        if html is not None:
            console.print(f"HTML report written to {html}")
    if fail_on_drift and report.dataset_drift:
        raise typer.Exit(1)


def _source(path: Path) -> ColumnSource:
    """Parquet is read a group of columns at a time; CSV, a row format, is read whole."""
    from services.monitor.domain.drift import ParquetSource, TableSource, read_table
    from services.monitor.domain.drift.io import PARQUET_SUFFIXES

    if path.suffix.lower() in PARQUET_SUFFIXES:
        return ParquetSource(path)
    return TableSource(read_table(path))


@contextmanager
def _group_progress() -> Iterator[Any]:
    """A one-line progress bar over the column groups, advanced as each group is done, shown on a
    terminal when the data does not fit in one group:

        Drift, group 3/25 ━━━━━━━╸━━━━━━━━━━━━━━━━━━━━━━━━━━━━  12/100 columns 0:00:07 < 0:00:51
    """
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("columns"),
        TimeElapsedColumn(),
        TextColumn("<"),
        TimeRemainingColumn(),
        console=progress_console,
        transient=True,
    )
    task = None

    def update(step: GroupProgress) -> None:
        nonlocal task
        if step.group == 0:
            if step.groups > 1 and progress_console.is_terminal:
                bar.start()
                task = bar.add_task(f"Drift, {step.groups} column groups", total=step.columns)
            return
        if task is not None:
            bar.update(task, completed=step.columns_done, description=f"Drift, group {step.group}/{step.groups}")

    try:
        yield update
    finally:
        bar.stop()


def _print_table(report: DriftReport) -> None:
    table = Table(title="Data drift by column", box=box.SIMPLE_HEAD, pad_edge=False)
    for header in ("Column", "Type", "Method", "Score", "Threshold", "Verdict", "Missing"):
        numeric = header in ("Score", "Threshold", "Missing")
        # Identifiers are never cut; long column names fold onto a second line.
        table.add_column(
            header,
            justify="right" if numeric else "left",
            no_wrap=header != "Column",
            overflow="fold",
            min_width=min(max(6, *map(len, report.columns)), 24) if header == "Column" else None,
        )
    for name, column in report.columns.items():
        if column.status == "ok":
            verdict = "[red]drift[/red]" if column.drift else "[green]no drift[/green]"
        else:
            verdict = f"[dim]{column.status.value.replace('_', ' ')}[/dim]"
        table.add_row(
            name,
            column.column_type,
            column.method or "",
            "" if column.score is None else f"{column.score:.4g}",
            "" if column.threshold is None else f"{column.threshold:.4g}",
            verdict,
            "" if column.missing_share is None else f"{column.missing_share:.1%}",
        )
    console.print(table)
    if report.status != "ok":
        console.print(f"[yellow]No verdict: {report.status.value.replace('_', ' ')}[/yellow]")
        return
    verdict = (
        "[bold red]Dataset drift detected[/bold red]"
        if report.dataset_drift
        else "[bold green]No dataset drift[/bold green]"
    )
    console.print(
        f"{verdict}: {report.number_of_drifted_columns} of {report.number_of_columns} columns drifted "
        f"({report.drift_share:.1%}; threshold {report.drift_share_threshold:.0%})"
    )


if __name__ == "__main__":
    # As a group, so the command is spelled `drift` here too, as under `tessera`.
    typer.main.get_group(app)()
