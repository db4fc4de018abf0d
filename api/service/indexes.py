"""Index routes: build (as a job), list, add and delete cases, read a case and its thumbnails, jobs."""

from __future__ import annotations

import io
import logging
import uuid
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile as StarletteUploadFile

from kgreport.api.service import responses
from kgreport.api.service.bundles import save_bundle
from kgreport.api.service.errors import ApiError
from kgreport.api.service.forms import body_kind, form_bool, form_file, json_body
from kgreport.api.service.jobs import Job, Work
from kgreport.api.service.redact import client_json
from kgreport.api.service.state import ServiceState, get_state
from kgreport.api.service.uploads import remove_folder, safe_name, save_upload
from kgreport.indexing.archives import ArchiveFormat
from kgreport.indexing.archives.dicomweb import is_pacs_url
from kgreport.json_types import JsonObject
from kgreport.retrieval.ids import ID_RULE, check_id
from kgreport.retrieval.imaging import ImageDecodeError
from kgreport.retrieval.records import StoredCase
from kgreport.retrieval.stores.local.store import IndexUnreadableError
from kgreport.usecases import ingest
from kgreport.usecases.ingest import OperationError

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["indexes"])
State = Annotated[ServiceState, Depends(get_state)]
THUMBNAIL_PX = 256


class IndexBuild(BaseModel):
    """Build (or finish building) an index from an archive on the server, or from a PACS over DICOMweb."""

    name: str = Field(description=f"index name: {ID_RULE}", examples=["demo"])
    archive_path: str = Field(
        description="MedPix folder, manifest (.jsonl/.csv), DICOM or NIfTI folder, or a PACS: "
        "dicomweb+http(s)://HOST:PORT/dicom-web (credentials from the server's KGREPORT_DICOMWEB_* settings)"
    )
    format: ArchiveFormat | None = Field(default=None, description="default: detect")
    split: str = "train"
    limit: int | None = Field(default=None, ge=1, le=10**9)
    findings: bool | None = Field(default=None, description="write report findings into the graph")
    since: str | None = Field(default=None, description="PACS: studies from this StudyDate on (YYYYMMDD)")
    until: str | None = Field(default=None, description="PACS: studies up to this StudyDate (YYYYMMDD)")
    modality: str | None = Field(default=None, max_length=16, description="PACS: studies holding this modality")
    study_filter: list[str] = Field(default_factory=list, max_length=1000, description="PACS: only these studies")
    reports: str | None = Field(default=None, description="PACS: server folder with reports.jsonl/.csv")


def _archive_path(state: ServiceState, given: str) -> Path:
    """`given`, resolved, if it lies under an allowed archive root (settings.archive_roots)."""
    try:
        path = Path(given).expanduser().resolve()
        roots = state.settings.allowed_archive_roots
        inside = any(path == root or root in path.parents for root in roots)
        exists = inside and path.exists()
    except (ValueError, RuntimeError, OSError) as err:  # a NUL byte, "~nosuchuser", a name over NAME_MAX
        reason = err.strerror if isinstance(err, OSError) else str(err)  # an OSError's text names our path
        raise ApiError(422, "bad_archive_path", f"{given[:200]!r}: not a usable path ({reason})") from None
    if not inside:
        allowed = ", ".join(str(r) for r in roots)
        raise ApiError(403, "archive_not_allowed", f"{given}: not under an allowed archive root ({allowed})")
    if not exists:
        raise ApiError(404, "archive_not_found", f"{given}: no such file or folder on the server")
    return path


_MULTIPART_BUILD = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "index name"},
        "manifest": {"type": "string", "format": "binary", "description": "JSONL or CSV manifest"},
        "images": {"type": "array", "items": {"type": "string", "format": "binary"}, "description": "its images"},
        "findings": {"type": "boolean"},
    },
    "required": ["name", "manifest", "images"],
}
BUILD_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": IndexBuild.model_json_schema()},
        "multipart/form-data": {"schema": _MULTIPART_BUILD},
    },
}
MAX_BUNDLE_FILES = 10_000


@router.post(
    "/indexes",
    status_code=202,
    response_model=responses.JobAccepted,
    summary="Build an index (a job): from an archive on the server (JSON) or an uploaded manifest and its images",
    openapi_extra={"requestBody": BUILD_BODY},
)
async def build_index(request: Request, state: State) -> JsonObject:
    if body_kind(request, "send JSON naming a server archive, or a multipart manifest") == "json":
        body = await json_body(request, IndexBuild)
        state.settings.index_dir(body.name)  # a bad name fails now, not in the job
        if is_pacs_url(body.archive_path):
            return await _submit_pacs_build(state, body)
        archive = _archive_path(state, body.archive_path)
        return _submit_build(state, body.name, archive, body.format, body.split, body.limit, body.findings,
                             body.model_dump(mode="json"))  # fmt: skip
    form = await request.form(max_files=MAX_BUNDLE_FILES)
    name = str(form.get("name") or "")
    state.settings.index_dir(name)
    _refuse_if_busy(state, name)  # before the upload is written
    manifest = form_file(form, "manifest", "a JSONL or CSV file is required")
    images = [f for f in form.getlist("images") if isinstance(f, StarletteUploadFile)]
    findings = form_bool(form.get("findings"), "findings")
    max_bytes = int(state.settings.max_upload_mb * 1e6)
    path = await save_bundle(manifest, images, state.settings.index_uploads_dir(name), max_bytes)
    params: JsonObject = {"name": name, "manifest": manifest.filename, "images": len(images), "findings": findings}
    return _submit_build(state, name, path, "manifest", "train", None, findings, params)


async def _submit_pacs_build(state: ServiceState, body: IndexBuild) -> JsonObject:
    """The PACS is probed and its studies listed before the job is queued: a wrong URL, wrong credentials
    or a PACS that is down answer 502 now, not in a failed job later."""
    from kgreport.indexing.archives.dicomweb import PacsQuery
    from kgreport.usecases.pacs import build_from_pacs, open_pacs

    _refuse_if_busy(state, body.name)
    query = PacsQuery(body.since, body.until, body.modality, tuple(body.study_filter))
    reports = _archive_path(state, body.reports) if body.reports else None
    pacs = await run_in_threadpool(open_pacs, state.services, body.name, body.archive_path, query, reports)
    with_findings = state.settings.index_findings if body.findings is None else body.findings

    def work(job: Job) -> JsonObject:
        result, skipped = build_from_pacs(state.services, body.name, pacs, findings=with_findings,
                                          on_total=job.set_total, progress=job.advance, locked=True)  # fmt: skip
        return {**result, "skipped": [{"source": s.source, "reason": s.reason} for s in skipped[:100]]}

    return _submit_reserved(state, body.name, body.model_dump(), work)


@router.post(
    "/indexes/{name}/sync",
    status_code=202,
    response_model=responses.JobAccepted,
    summary="Add the PACS studies new since the last sync (a job)",
)
def sync_pacs_index(name: str, state: State) -> JsonObject:
    from kgreport.usecases.pacs import read_source, sync_index

    state.settings.index_dir(name)
    if read_source(state.services, name) is None:
        state.services.open_store(name)  # 404 for no index at all
        raise ApiError(409, "not_a_pacs_index", f"index {name!r} was not built from a PACS: nothing to sync")

    def work(job: Job) -> JsonObject:
        result, skipped = sync_index(state.services, name, on_total=job.set_total, progress=job.advance, locked=True)
        return {**result, "skipped": [{"source": s.source, "reason": s.reason} for s in skipped[:100]]}

    return _submit_reserved(state, name, {"name": name, "sync": True}, work)


def _refuse_if_busy(state: ServiceState, name: str) -> None:
    """409 at submission when a build of `name` is queued or running here, or another writer holds it."""
    if (job := state.jobs.active("index_build", name)) is not None:
        raise ApiError(409, "index_busy", f"index {name!r} is being built by job {job.id}; wait for it to finish")
    if busy := state.services.stores.busy(name):
        raise ApiError(409, "index_busy", busy)


def _submit_reserved(state: ServiceState, name: str, params: JsonObject, work: Work) -> JsonObject:
    """Take the index's writer lock now (409 `index_busy` if another writer, on any replica, has it) and
    queue `work` to run under it and let it go: so of two builds of one index submitted at once, through
    one replica or two, exactly one is accepted."""
    _refuse_if_busy(state, name)
    reservation = ExitStack()
    reservation.enter_context(state.services.stores.write_lock(name))

    def reserved(job: Job) -> JsonObject:
        with reservation:
            return work(job)

    try:
        job = state.jobs.submit("index_build", params, reserved)
    except BaseException:
        reservation.close()
        raise
    return {"job": job.as_json(), "status_url": f"/v1/jobs/{job.id}"}


def _submit_build(
    state: ServiceState,
    name: str,
    archive: Path,
    fmt: str | None,
    split: str,
    limit: int | None,
    findings: bool | None,
    params: JsonObject,
) -> JsonObject:
    """Queue the build of `archive` into `name`; the 202 answer with the job's status URL."""
    with_findings = state.settings.index_findings if findings is None else findings

    def work(job: Job) -> JsonObject:
        request = ingest.IngestRequest(name, archive, fmt, split, limit, findings=with_findings)
        result = ingest.ingest_archive(
            state.services, request, on_total=job.set_total, progress=job.advance, locked=True
        )
        skipped = [{"source": s.source, "reason": s.reason} for s in result.skipped[:100]]
        return {**result.as_json(), "skipped": skipped}

    return _submit_reserved(state, name, params, work)


@router.get("/jobs/{job_id}", response_model=responses.Job, summary="A job's state, progress, result and error")
def get_job(job_id: str, state: State) -> JsonObject:
    job = state.jobs.get(job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no job {job_id!r} (the last 200 jobs are kept)")
    return dict(client_json(job.as_json(), state.settings))  # a failed build's error, skipped files


@router.get("/indexes", response_model=responses.IndexList, summary="The indexes under the data dir")
def list_indexes(state: State) -> JsonObject:
    indexes = []
    for name in state.services.stores.names():
        try:
            info = state.services.open_store(name).info().as_json()
            info.pop("path", None)  # where the server keeps it is not the client's business
            indexes.append({"name": name, "status": "ok", **info})
        except (ValueError, OSError, IndexUnreadableError) as err:  # one broken index never hides the others
            log.warning("index %s is unreadable: %s", name, err)
            indexes.append({"name": name, "status": f"unreadable: {err}"})
    return dict(client_json({"indexes": indexes}, state.settings))


@router.post(
    "/indexes/{name}/cases",
    status_code=201,
    response_model=responses.CaseAdded,
    summary="Add one case: its images and report",
)
async def add_case(
    name: str,
    state: State,
    case_id: Annotated[str, Form(description=f"the case's id: {ID_RULE}")],
    report: Annotated[str, Form(description="the report text (Findings / Impression headings optional)")],
    images: Annotated[list[UploadFile], File(description="PNG, JPEG, DICOM or NIfTI files")],
    patient_id: Annotated[str | None, Form()] = None,
    findings: Annotated[bool | None, Form()] = None,
) -> JsonObject:
    check_id(case_id, "case id")  # 422 before anything is saved
    if patient_id is not None:
        check_id(patient_id, "patient id", f"case {case_id}")
    state.services.open_store(name)  # 404 before anything is saved
    ingest.check_image_count(state.services, case_id, len(images))
    folder = state.settings.index_uploads_dir(name) / f"{safe_name(case_id, 'case')}-{uuid.uuid4().hex[:8]}"
    max_bytes = int(state.settings.max_upload_mb * 1e6)
    paths: list[Path] = []
    try:
        for upload in images:
            paths.append(await save_upload(upload, folder, max_bytes))
        image_ids = [f"{case_id}/{safe_name(u.filename or f'image{i}', f'image{i}')}" for i, u in enumerate(images)]
        if len(set(image_ids)) < len(image_ids):
            image_ids = [f"{case_id}/{i}-{x.split('/', 1)[1]}" for i, x in enumerate(image_ids)]
        result = ingest.add_case(
            state.services, name, case_id, report, paths, patient_id=patient_id, image_ids=image_ids,
            findings=state.settings.index_findings if findings is None else findings,
        )  # fmt: skip
    except (OperationError, ImageDecodeError) as err:  # name the client's files, not where we saved them
        remove_folder(folder)  # nothing half-added is left behind
        message = str(err)
        for path, upload in zip(paths, images, strict=False):
            message = message.replace(str(path), upload.filename or path.name)
        err.args = (message,)
        raise
    except BaseException:
        remove_folder(folder)
        raise
    return result


@router.delete(
    "/indexes/{name}/cases/{case_id}",
    response_model=responses.CasesDeleted,
    summary="Delete one case (and its findings in the graph)",
)
def delete_case(name: str, case_id: str, state: State) -> JsonObject:
    check_id(case_id, "case id")
    result = ingest.delete_cases(state.services, name, [case_id])
    if not result["deleted"]:
        raise ApiError(404, "case_not_found", f"no case {case_id!r} in index {name!r}")
    return result


def _stored_case(state: ServiceState, index: str, case_id: str) -> StoredCase:
    check_id(case_id, "case id")  # an id no case can have is a 422, not a search
    case = state.services.open_store(index).get_case(case_id)
    if case is None:
        raise ApiError(404, "case_not_found", f"no case {case_id!r} in index {index!r}")
    return case


@router.get(
    "/cases/{case_id}",
    response_model=responses.StoredCase,
    summary="A stored case: report, metadata, images (with thumbnail links)",
)
def get_case(case_id: str, state: State, index: Annotated[str, Query()] = "demo") -> JsonObject:
    stored = _stored_case(state, index, case_id)
    images: list[JsonObject] = []
    for image in stored.images:
        shown = {k: v for k, v in asdict(image).items() if k != "path"}  # server paths are not the client's business
        images.append(
            {**shown, "thumbnail_url": f"/v1/cases/{case_id}/thumbnail?index={index}&image_id={image.image_id}"}
        )
    return {**stored.as_json(), "images": images}


@router.get(
    "/cases/{case_id}/thumbnail",
    summary="A PNG thumbnail of one of the case's images (the first by default)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def get_thumbnail(
    case_id: str,
    state: State,
    index: Annotated[str, Query()] = "demo",
    image_id: Annotated[str | None, Query()] = None,
    window: Annotated[str | None, Query(description="CT window preset for HU data")] = None,
) -> Response:
    from kgreport.retrieval.imaging import load_image

    case = _stored_case(state, index, case_id)
    images = [i for i in case.images if image_id is None or i.image_id == image_id]
    if not images:
        raise ApiError(404, "image_not_found", f"case {case_id!r} has no image {image_id!r}")
    decoded = load_image(Path(images[0].path), max_pixels=state.settings.max_image_pixels)
    return Response(png_preview(decoded, window, THUMBNAIL_PX), media_type="image/png")


def png_preview(decoded: Any, window: str | None, size: int) -> bytes:
    """A PNG of the image (middle slice of a volume), windowed if CT, at most `size` px on a side."""
    from PIL import Image

    from kgreport.retrieval.imaging.slices import to_slices
    from kgreport.retrieval.imaging.windows import get_window

    if window is not None:
        get_window(window)  # an unknown preset is a 422 naming the known ones, whether or not the image is CT
    pixels = to_slices(decoded, k=1, window=window)[0]
    picture = Image.fromarray(pixels)
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
