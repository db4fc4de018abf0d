"""`kgreport index ...`: build, extend, delete, rebuild, inspect and list similar-case indexes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kgreport.api.cli.support import (
    FINDINGS_HELP,
    CliError,
    configure_logging,
    console,
    ingest_with_progress,
    load_services,
    out,
    progress_bars,
    run_with_progress,
    user_errors,
    want_findings,
)
from kgreport.usecases.ingest import IngestRequest
from kgreport.usecases.settings import get_settings

if TYPE_CHECKING:
    from kgreport.usecases.services import Services

index_app = typer.Typer(help="Build and manage similar-case indexes.", no_args_is_help=True)


@index_app.command("build")
def index_build(
    archive: Annotated[
        str,
        typer.Argument(
            help="MedPix folder, manifest (.jsonl/.csv), DICOM or NIfTI folder, or a PACS: "
            "dicomweb+http(s)://HOST:PORT/dicom-web (credentials from KGREPORT_DICOMWEB_*)"
        ),
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="index name")],
    format: Annotated[
        str | None, typer.Option("--format", help="medpix|manifest|dicom|nifti (default: detect)")
    ] = None,
    split: Annotated[str, typer.Option(help="MedPix split")] = "train",
    limit: Annotated[int | None, typer.Option(help="index only the first N cases")] = None,
    findings: Annotated[bool | None, typer.Option(help=FINDINGS_HELP, show_default=False)] = None,
    since: Annotated[str | None, typer.Option(help="PACS: studies from this StudyDate on (YYYYMMDD)")] = None,
    until: Annotated[str | None, typer.Option(help="PACS: studies up to this StudyDate (YYYYMMDD)")] = None,
    modality: Annotated[str | None, typer.Option(help="PACS: studies holding this modality, its series only")] = None,
    study_filter: Annotated[
        list[str] | None, typer.Option(help="PACS: only this StudyInstanceUID (repeatable)")
    ] = None,
    reports: Annotated[
        Path | None,
        typer.Option(help="PACS: folder with reports.jsonl/.csv keyed by StudyInstanceUID or AccessionNumber"),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Build (or finish building) an index. Rerunning after a crash adds only what is missing."""
    from kgreport.indexing.archives.dicomweb import PacsQuery, is_pacs_url
    from kgreport.usecases.pacs import build_from_pacs, open_pacs

    configure_logging(verbose)
    with user_errors():
        services = load_services()
        record = want_findings(services, findings)
        if is_pacs_url(archive):
            query = PacsQuery(since, until, modality, tuple(study_filter or ()))
            pacs = open_pacs(services, name, archive, query, reports.resolve() if reports else None)
            result = run_with_progress(
                f"indexing {pacs.name} ({len(pacs)} studies)",
                lambda on_total, progress: build_from_pacs(
                    services, name, pacs, findings=record, on_total=on_total, progress=progress
                ),
            )
        else:
            request = IngestRequest(name, Path(archive), format, split, limit, findings=record)
            result = ingest_with_progress(services, request)
    out.print_json(json.dumps(result))


@index_app.command("sync")
def index_sync(
    name: Annotated[str, typer.Argument(help="an index built from a PACS")],
    findings: Annotated[bool | None, typer.Option(help=FINDINGS_HELP, show_default=False)] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Add the PACS's studies that are new since the last sync (safe from cron; rerun after a crash). Studies
    the PACS no longer lists are reported, not deleted."""
    from kgreport.usecases.pacs import sync_index

    configure_logging(verbose)
    with user_errors():
        services = load_services()
        record = want_findings(services, findings)
        result = run_with_progress(
            f"syncing {name}",
            lambda on_total, progress: sync_index(
                services, name, findings=record, on_total=on_total, progress=progress
            ),
        )
    out.print_json(json.dumps(result))


@index_app.command("add")
def index_add(
    name: Annotated[str, typer.Option("--name", "-n", help="existing index")],
    archive: Annotated[Path | None, typer.Argument(help="archive whose cases to add")] = None,
    format: Annotated[str | None, typer.Option("--format")] = None,
    split: Annotated[str, typer.Option(help="MedPix split")] = "train",
    case_id: Annotated[str | None, typer.Option(help="add one case: its id")] = None,
    report: Annotated[str | None, typer.Option(help="add one case: its report text")] = None,
    patient_id: Annotated[str | None, typer.Option(help="add one case: its patient id")] = None,
    image: Annotated[list[Path] | None, typer.Option("--image", help="add one case: an image (repeatable)")] = None,
    replace: Annotated[bool, typer.Option(help="re-embed cases that are already stored")] = False,
    findings: Annotated[bool | None, typer.Option(help=FINDINGS_HELP, show_default=False)] = None,
) -> None:
    """Add cases to an existing index, from an archive or as one case given on the command line."""
    from kgreport.usecases.ingest import add_case

    with user_errors():
        services = load_services()
        record = want_findings(services, findings)
        if archive is not None:
            request = IngestRequest(name, archive, format, split, create=False, replace=replace, findings=record)
            result = ingest_with_progress(services, request)
        elif not case_id or not image:
            raise CliError("give an ARCHIVE, or --case-id with --report and at least one --image")
        else:
            result = add_case(
                services, name, case_id, report or "", image, patient_id=patient_id, replace=replace, findings=record
            )
    out.print_json(json.dumps(result))


@index_app.command("delete")
def index_delete(
    name: Annotated[str, typer.Argument(help="index name")],
    case_ids: Annotated[list[str] | None, typer.Argument(help="cases to delete; none = the whole index")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="confirm deleting the whole index")] = False,
) -> None:
    """Delete cases from an index, or the whole index (with --yes); their findings leave the graph too."""
    from kgreport.usecases.ingest import delete_cases, delete_index

    with user_errors():
        services = load_services()
        if not case_ids:
            if not yes and services.stores.exists(name):
                raise CliError(f"deleting the whole index {name!r} needs --yes")
            out.print_json(json.dumps(delete_index(services, name)))
            return
        out.print_json(json.dumps(delete_cases(services, name, case_ids)))


@index_app.command("rebuild")
def index_rebuild(
    name: Annotated[str, typer.Argument(help="index name")],
    encoder: Annotated[
        Path | None, typer.Option("--encoder", help="image encoder folder (default: the loaded one)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Re-embed every case of an index with another image encoder; the old index stays until the new one
    is complete. Search it afterwards with the same encoder (KGREPORT_IMAGE_ENCODER)."""
    from kgreport.usecases.ingest import rebuild_index

    configure_logging(verbose)
    with user_errors(), progress_bars() as progress:
        task = progress.add_task(f"re-embedding {name}", total=None)
        result = rebuild_index(
            load_services(),
            name,
            encoder,
            on_total=lambda n: progress.update(task, total=n),
            progress=lambda n: progress.advance(task, n),
        )
    out.print_json(json.dumps(result))
    if encoder is not None:
        console.print(f"search it with KGREPORT_IMAGE_ENCODER={encoder}")


@index_app.command("info")
def index_info(
    name: Annotated[str, typer.Argument(help="index name")],
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON object on one line, for scripts and monitoring")
    ] = False,
) -> None:
    """Counts (cases, images, with and without reports), dimensions, encoders, index kinds and sizes of an
    index, and for one built from a PACS its source and last sync."""
    from kgreport.retrieval.stores.local.store import IndexNotFoundError
    from kgreport.usecases.pacs import read_source

    with user_errors():
        services = load_services()
        if not services.stores.exists(name):
            raise IndexNotFoundError(f"index {name!r} not found")
        with services.stores.open(name, services.index_params) as store:
            info = store.info().as_json()
        if (source := read_source(services, name)) is not None:
            info["pacs"] = source
    if as_json:
        sys.stdout.write(json.dumps(info, default=str) + "\n")
    else:
        out.print_json(json.dumps(info, default=str))


@index_app.command("check")
def index_check(
    name: Annotated[str, typer.Argument(help="index name")],
    as_json: Annotated[bool, typer.Option("--json", help="the check as one JSON object")] = False,
) -> None:
    """Check an index's files against each other: SQLite integrity, FAISS ids and vectors against the rows,
    the manifest. Changes nothing. Exit code 0 when sound, 1 when a problem was found."""
    from kgreport.retrieval.index_check import check_index

    with user_errors():
        services = load_services()
        _local_only(services, "check")
        check = check_index(services.settings.index_dir(name))
    if as_json:
        out.print_json(json.dumps(check.as_json(), default=str))
    else:
        _print_check(name, check.ok, check.problems, check.notes)
    raise typer.Exit(0 if check.ok else 1)


@index_app.command("repair")
def index_repair(
    name: Annotated[str, typer.Argument(help="index name")],
    assume_loaded_encoders: Annotated[
        bool,
        typer.Option(help="rewrite an unreadable manifest naming the loaded encoders (you vouch they built it)"),
    ] = False,
) -> None:
    """Rebuild an index's FAISS files from its SQLite rows, and say what cannot be recovered (a lost database:
    FAISS holds vectors only). Exit code 0 when the index is sound afterwards, 1 otherwise."""
    from kgreport.retrieval.index_repair import repair_index

    with user_errors():
        services = load_services()
        _local_only(services, "repair")
        encoders = (services.image_encoder, services.text_encoder) if assume_loaded_encoders else (None, None)
        repair = repair_index(
            services.settings.index_dir(name),
            services.index_params,
            image_encoder=encoders[0],
            text_encoder=encoders[1],
        )
    for action in repair.actions:
        console.print(f"[green]repaired[/green] {action}")
    for line in repair.unrecoverable:
        console.print(f"[red]cannot recover[/red] {line}")
    _print_check(name, repair.ok, repair.after.problems, repair.after.notes)
    raise typer.Exit(0 if repair.ok else 1)


def _local_only(services: Services, command: str) -> None:
    """`index check` and `repair` read an index's own files: there are none with the case store on Milvus."""
    if services.stores.kind != "local":
        raise CliError(
            f"`kgreport index {command}` checks the files of a local index; with KGREPORT_CASE_STORE on Milvus "
            "the server keeps the vectors and rows itself (see its own tools)"
        )


def _print_check(name: str, ok: bool, problems: list[str], notes: list[str]) -> None:
    for note in notes:
        console.print(f"[dim]note[/dim] {note}")
    for problem in problems:
        console.print(f"[red]problem[/red] {problem}")
    verdict = "[green]sound[/green]" if ok else f"[red]{len(problems)} problem(s)[/red]"
    console.print(f"index {name}: {verdict}")


@index_app.command("list")
def index_list() -> None:
    """Names of the indexes under the data dir."""
    settings = get_settings()
    out.print_json(json.dumps({"data_dir": str(settings.data_dir), "indexes": settings.index_names()}))
