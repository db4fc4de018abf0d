"""What every `kgreport` command shares: the consoles, loading services, progress bars and turning known
failures into one clear line and exit code 2."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from kgreport.api.error_table import EXIT_KNOWN_FAILURE, known_error_types
from kgreport.retrieval.records import SkippedItem
from kgreport.usecases.services import Services
from kgreport.usecases.settings import get_settings

if TYPE_CHECKING:
    from kgreport.generator.pipeline import ReportWriter
    from kgreport.usecases.ingest import IngestRequest

console = Console(stderr=True)  # messages: errors, warnings, what was skipped (never silenced)
progress_console = Console(stderr=True)  # progress bars and status lines: silenced by `kgreport --quiet`
out = Console(soft_wrap=True)  # results, on stdout


def set_output(*, verbose: bool, quiet: bool) -> None:
    """`kgreport --verbose` logs each step (INFO); `--quiet` drops progress bars and status lines, and keeps
    results, warnings and errors."""
    if verbose:
        configure_logging(True)
    progress_console.quiet = quiet


class CliError(Exception):
    """An error the user can fix; printed without a traceback."""


def load_services() -> Services:
    return Services(get_settings())


def progress_bars() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=progress_console,
        transient=False,
    )


def stage_progress(bars: Progress) -> Callable[[str, int | None], Callable[..., None]]:
    """A `(description, total) -> advance(n=1, ...)` factory over `bars`: one bar per stage of a long job."""

    def stage(description: str, total: int | None) -> Callable[..., None]:
        task = bars.add_task(description, total=total)
        return lambda n=1, *_: bars.advance(task, n)

    return stage


def open_writer(services: Services, index: str, folder: Path | None = None) -> ReportWriter:
    """The trained report writer over `index`, loaded under a status line: the first run on a machine
    converts the base LLM once (tens of seconds), and the user sees why it waits."""
    from kgreport.usecases.reporting import open_report_writer

    with progress_console.status("loading the report writer (the first run converts its base LLM once, about 30 s)"):
        return open_report_writer(services, index, folder)


@contextmanager
def user_errors() -> Iterator[None]:
    """Known failures (the table in `api/error_table.py`, `CliError`, and a setting pydantic refuses) → one
    clear line and exit code 2."""
    known: tuple[type[Exception], ...] = (CliError, ValidationError, *known_error_types())
    try:
        yield
    except known as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(EXIT_KNOWN_FAILURE) from None


def configure_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(min(logging.getLogger().level or level, level))  # a second call can only add


Work = Callable[[Callable[[int], None], Callable[[int], None]], tuple[dict, list[SkippedItem]]]


def run_with_progress(description: str, work: Work) -> dict:
    """`work(on_total, progress)` under a progress bar, then what it skipped printed; its summary."""
    with progress_bars() as bars:
        task = bars.add_task(description, total=None)
        result, skipped = work(lambda n: bars.update(task, total=n), lambda n: bars.advance(task, n))
    for item in skipped[:20]:
        console.print(f"[yellow]skipped[/yellow] {item.source}: {item.reason}")
    if len(skipped) > 20:
        console.print(f"[yellow]… and {len(skipped) - 20} more skipped[/yellow]")
    return result


def ingest_with_progress(services: Services, request: IngestRequest) -> dict:
    """`operations.ingest_archive` with a progress bar, printing what was skipped."""
    from kgreport.usecases.ingest import ingest_archive

    def work(on_total: Callable[[int], None], progress: Callable[[int], None]) -> tuple[dict, list[SkippedItem]]:
        result = ingest_archive(services, request, on_total=on_total, progress=progress)
        return result.as_json(), result.skipped

    return run_with_progress(f"indexing {request.archive.name}", work)


FINDINGS_HELP = "write each report's findings into the ontology graph (default: KGREPORT_INDEX_FINDINGS, on)"


def want_findings(services: Services, flag: bool | None) -> bool:
    return services.settings.index_findings if flag is None else flag
