"""Index operations shared by the CLI and the service: build or extend from an archive, add one case,
delete cases or a whole index.

Every write to an index holds that index's writer lock (`Services.stores.write_lock`: an exclusive `flock`
on `.write.lock` in its folder, or with the case store on Milvus a lease in the shared graph), across
threads, processes and replicas: a second writer, from the service or the CLI, gets `IndexBusyError` at
once instead of interleaving with the first. Readers never take it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kgreport.errors import Conflict, InvalidInput
from kgreport.json_types import JsonObject
from kgreport.retrieval.records import Case, CaseImage, IndexInfo, SkippedItem
from kgreport.retrieval.stores.local.store import IndexNotFoundError
from kgreport.retrieval.stores.local.write_lock import (
    IndexBusyError as IndexBusyError,  # re-exported: callers import it from here
)
from kgreport.usecases.services import Services

if TYPE_CHECKING:
    from kgreport.indexing.archives import Archive
    from kgreport.indexing.options import IngestOptions
    from kgreport.indexing.pipeline import BuildSummary

Progress = Callable[[int], None]  # advance by n cases


class OperationError(InvalidInput):
    """A request that cannot be carried out as given (the message says why)."""

    code = "bad_request"


class CaseExistsError(Conflict, OperationError):
    """The case is already in the index."""

    code = "case_exists"


class TooManyImagesError(OperationError):
    """More images for one case than `settings.max_images_per_case`."""

    code = "too_many_images"


def check_image_count(services: Services, case_id: str, count: int) -> None:
    """TooManyImagesError when one case brings more images than the settings allow; the service calls it
    before an upload is written, `add_case` again for every front end."""
    limit = services.settings.max_images_per_case
    if count > limit:
        raise TooManyImagesError(
            f"case {case_id}: {count} images, more than the {limit} a case may carry (KGREPORT_MAX_IMAGES_PER_CASE)"
        )


def ingest_options(services: Services, *, replace: bool = False, image_only: bool = False) -> IngestOptions:
    """How cases are decoded and embedded, from the settings: one place for an archive build, a case added
    alone and a rebuild, so the same case gets the same vectors whichever way it came in."""
    from kgreport.indexing.options import IngestOptions

    settings = services.settings
    return IngestOptions(
        batch_cases=settings.ingest_batch_cases,
        replace=replace,
        imaging=settings.imaging_config(),
        image_only=image_only,
    )


@dataclass(frozen=True)
class IngestRequest:
    """An archive to index: what `kgreport index build|add` and `POST /v1/indexes` both ask for."""

    index: str
    archive: Path  # a MedPix folder, a manifest (.jsonl/.csv), a DICOM or NIfTI folder
    format: str | None = None  # None: detect
    split: str = "train"  # MedPix: which split's cases
    limit: int | None = None  # only the first N cases
    create: bool = True  # make the index if it does not exist (else: it must)
    replace: bool = False  # re-embed cases already stored
    findings: bool = True  # write each report's findings into the ontology graph


@dataclass(frozen=True)
class IngestResult:
    """What an ingest did (`BuildSummary`: added, skipped, speed) and the index after it."""

    index: str
    summary: BuildSummary
    info: IndexInfo

    @property
    def skipped(self) -> list[SkippedItem]:
        return list(self.summary.skipped)

    def as_json(self) -> JsonObject:
        return {"index": self.index, **self.summary.as_json(), "info": self.info.as_json()}


def ingest_archive(
    services: Services,
    request: IngestRequest,
    *,
    on_total: Callable[[int], None] | None = None,
    progress: Progress | None = None,
    locked: bool = False,
) -> IngestResult:
    """Index the request's archive into its index."""
    from kgreport.indexing.archives import open_archive

    archive = open_archive(request.archive, request.format, split=request.split, limit=request.limit)
    return ingest(services, request.index, archive, create=request.create, replace=request.replace,
                  findings=request.findings, on_total=on_total, progress=progress, locked=locked)  # fmt: skip


def ingest(
    services: Services,
    name: str,
    archive: Archive,
    *,
    create: bool,
    replace: bool = False,
    findings: bool = True,
    image_only: bool = False,
    on_total: Callable[[int], None] | None = None,
    progress: Progress | None = None,
    locked: bool = False,
) -> IngestResult:
    """Index the cases of an opened `archive` into `name` under its writer lock.
    `image_only`: cases without a report are indexed by their images (a PACS's unreported studies);
    `locked`: the caller holds the writer lock already (a job reserved the index when it was submitted)."""
    from kgreport.indexing.pipeline import Ingestor

    if not create:
        services.open_store(name)  # a missing index is an error before the lock file is made
    with nullcontext() if locked else services.stores.write_lock(name):
        store = services.open_store(name, create=create)
        options = ingest_options(services, replace=replace, image_only=image_only)
        recorder = services.finding_recorder(name) if findings else None
        ingestor = Ingestor(store, services.image_encoder, services.text_encoder, options, recorder)
        if on_total:
            on_total(len(archive))
        summary = ingestor.ingest(archive, progress=progress)
        return IngestResult(name, summary, store.info())


def add_case(
    services: Services,
    name: str,
    case_id: str,
    report: str,
    images: list[Path],
    *,
    patient_id: str | None = None,
    replace: bool = False,
    findings: bool = True,
    image_ids: list[str] | None = None,
) -> JsonObject:
    """Add one case (its report text and image files) to the existing index `name`."""
    from kgreport.indexing.pipeline import Ingestor
    from kgreport.retrieval.report_sections import split_report

    if not case_id.strip():
        raise OperationError("a case needs a non-empty case id")
    if not images:
        raise OperationError(f"case {case_id}: at least one image is needed")
    check_image_count(services, case_id, len(images))
    sections = split_report(report or "")
    if sections.is_empty():
        raise OperationError(f"case {case_id}: empty report")
    for path in images:
        if not path.exists():
            raise OperationError(f"{path}: image not found")
    ids = image_ids or [f"{case_id}/{p.name}" for p in images]
    case = Case(
        case_id=case_id,
        patient_id=patient_id,
        report=sections,
        images=tuple(CaseImage(image_id=i, path=p.resolve()) for i, p in zip(ids, images, strict=True)),
    )
    store = services.open_store(name)
    with services.stores.write_lock(name):
        recorder = services.finding_recorder(name) if findings else None
        options = ingest_options(services, replace=replace)
        summary = Ingestor(store, services.image_encoder, services.text_encoder, options, recorder).ingest([case])
    if summary.cases_already_present:
        raise CaseExistsError(f"case {case_id} is already in index {name!r} (replace it to re-embed)")
    if not summary.cases_added:
        reasons = "; ".join(f"{s.source}: {s.reason}" for s in summary.skipped)
        raise OperationError(f"case {case_id} not added: {reasons}")
    return {"index": name, **summary.as_json()}


def delete_cases(services: Services, name: str, case_ids: list[str]) -> JsonObject:
    """Delete cases from `name`, their findings from the graph, and the images they were uploaded with;
    unknown ids are reported, not errors."""
    from kgreport.knowledge.archive import delete_cases as delete_case_findings

    store = services.open_store(name)
    with services.stores.write_lock(name):
        images = {c: [i.path for i in stored.images] for c in case_ids if (stored := store.get_case(c))}
        deleted = [c for c in case_ids if store.delete_case(c)]
        store.flush()
        delete_case_findings(services.graph, name, deleted)
        uploaded = [Path(p) for c in deleted for p in images.get(c, [])]
        _remove_uploads(uploaded, services.settings.index_uploads_dir(name))
    return {"index": name, "deleted": deleted, "not_found": sorted(set(case_ids) - set(deleted))}


def _remove_uploads(paths: list[Path], uploads: Path) -> None:
    """Delete those of `paths` that the service stored under `uploads` (never an archive's own files), and
    the folders they leave empty."""
    root = uploads.resolve()
    for path in paths:
        resolved = path.resolve()
        if root not in resolved.parents:
            continue
        resolved.unlink(missing_ok=True)
        folder = resolved.parent
        while folder != root and root in folder.parents and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent


def delete_index(services: Services, name: str) -> JsonObject:
    """Delete the whole index `name`, the images uploaded for it or fetched for it from a PACS, and its findings in
    the graph."""
    from kgreport.knowledge.archive import delete_index as delete_index_findings

    if not services.stores.exists(name):
        raise IndexNotFoundError(f"index {name!r} not found")
    with services.stores.write_lock(name):
        services.close_store(name)
        services.stores.drop(name)
        shutil.rmtree(services.settings.index_uploads_dir(name), ignore_errors=True)  # images its cases were sent with
        shutil.rmtree(services.settings.shared_root / "pacs" / name, ignore_errors=True)  # studies from a PACS
    delete_index_findings(services.graph, name)
    return {"index": name, "deleted": True}


def rebuild_index(
    services: Services,
    name: str,
    encoder_dir: Path | None = None,
    *,
    on_total: Callable[[int], None] | None = None,
    progress: Progress | None = None,
) -> JsonObject:
    """Re-embed every case of `name` with another image encoder (default: the loaded one) into a new
    store beside it, and swap it in only when complete: until then, and if any case cannot be
    re-embedded (an image moved away), the old index stays as it was. Findings in the graph stay too
    (same cases, same reports)."""
    from kgreport.indexing.pipeline import Ingestor
    from kgreport.retrieval.encoders.image_encoder import load_image_encoder

    stores = services.stores
    if not stores.exists(name):
        raise IndexNotFoundError(f"index {name!r} not found")
    encoder = load_image_encoder(encoder_dir) if encoder_dir else services.image_encoder
    with stores.write_lock(name):
        old = stores.open(name, services.index_params)  # not open_store: its encoders may differ
        try:
            cases = list(old.stored_cases())
        finally:
            old.close()
        new = stores.create_staging(name, encoder, services.text_encoder, services.index_params)
        try:
            options = ingest_options(services, image_only=True)  # a PACS index's unreported cases are kept too
            if on_total:
                on_total(len(cases))
            summary = Ingestor(new, encoder, services.text_encoder, options).ingest(cases, progress=progress)
            new.flush()
        finally:
            new.close()
        if summary.cases_added != len(cases):
            stores.drop_staging(name)
            reasons = "; ".join(f"{s.source}: {s.reason}" for s in summary.skipped[:5])
            raise OperationError(
                f"index {name!r} kept as it was: {len(cases) - summary.cases_added} of {len(cases)} cases could "
                f"not be re-embedded ({reasons})"
            )
        services.close_store(name)
        stores.swap_in_staging(name)
    return {
        "index": name,
        "image_encoder": encoder.name,
        "image_encoder_path": str(encoder_dir) if encoder_dir else None,
        "cases": summary.cases_added,
        "images": summary.images_added,
        "seconds": round(summary.seconds, 2),
        "images_per_second": round(summary.images_per_second, 2),
    }
