"""Query routes: similar-case search (image, text or both), grounded reports, concepts, image previews.

Uploaded query images are written to a private folder under the data dir for the decoders and
removed when the request ends. Model work runs in the thread pool, never on the event loop, and
report writing is serialised (one LLM).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile as StarletteUploadFile

from kgreport.api.service import responses
from kgreport.api.service.errors import ApiError
from kgreport.api.service.forms import body_kind, form_file, form_int, json_body, parse_filters
from kgreport.api.service.indexes import png_preview
from kgreport.api.service.state import ServiceState, get_state
from kgreport.api.service.uploads import write_upload
from kgreport.json_types import JsonObject
from kgreport.retrieval.config import SearchConfig
from kgreport.retrieval.imaging import ImageDecodeError
from kgreport.retrieval.records import SearchResult
from kgreport.retrieval.search import QueryError
from kgreport.usecases import reporting
from kgreport.usecases.search import SearchRequest, search_cases

router = APIRouter(prefix="/v1", tags=["queries"])
State = Annotated[ServiceState, Depends(get_state)]


class TextSearch(BaseModel):
    text: str = Field(min_length=1, max_length=20_000, examples=["axial CT of the chest with a lung mass"])
    index: str = "demo"
    k: int = Field(default=SearchConfig.k, ge=1, le=100)
    filters: dict[str, str] = Field(default_factory=dict, examples=[{"modality": "CT"}])


_FORM_FIELDS = {
    "index": {"type": "string", "default": "demo"},
    "k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
    "text": {"type": "string", "description": "optional text: image + text is a hybrid query"},
    "filters": {"type": "string", "description": 'JSON object of strings, e.g. {"modality": "CT"}'},
}
SEARCH_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"image": {"type": "string", "format": "binary"}, **_FORM_FIELDS},
                "required": ["image"],
            }
        },
        "application/json": {"schema": TextSearch.model_json_schema()},
    },
}


@contextmanager
def query_image(state: ServiceState, upload: StarletteUploadFile) -> Iterator[Path]:
    """The upload as a file on the server while the block runs; call it in the thread pool (file I/O).

    One uniquely named file in the query-upload folder, removed afterwards. A decoder's error names the
    client's file, not our temporary path."""
    folder = state.settings.query_uploads_dir
    path = write_upload(upload.file, upload.filename, folder, int(state.settings.max_upload_mb * 1e6))
    try:
        yield path
    except (QueryError, ImageDecodeError) as err:
        message = str(err).replace(str(path), upload.filename or "upload")
        raise ApiError(422, "image_unreadable", message) from None
    finally:
        path.unlink(missing_ok=True)


def _with_thumbnails(result: SearchResult, index: str, query: str | None = None) -> JsonObject:
    hits = [
        {
            **hit.as_json(),
            "thumbnail_url": f"/v1/cases/{hit.case_id}/thumbnail?index={index}&image_id={hit.image_id}",
            "case_url": f"/v1/cases/{hit.case_id}?index={index}",
        }
        for hit in result.hits
    ]
    return {"index": index, **result.as_json(), "hits": hits, "query": result.query if query is None else query}


def _search_upload(state: ServiceState, request: SearchRequest, image: StarletteUploadFile) -> SearchResult:
    """`search_cases` for an uploaded image: an unknown index is a 404 before the upload is written."""
    state.services.searcher(request.index)
    with query_image(state, image) as path:
        return search_cases(state.services, replace(request, image=path))


@router.post(
    "/search",
    response_model=responses.SearchAnswer,
    summary="Similar prior cases for an image (multipart) or a text (JSON)",
    openapi_extra={"requestBody": SEARCH_BODY},
)
async def search(request: Request, state: State) -> JsonObject:
    if body_kind(request, "send multipart/form-data with an image, or JSON with a text") == "json":
        body = await json_body(request, TextSearch)
        asked = SearchRequest(body.index, text=body.text, k=body.k, filters=body.filters)
        # one thread-pool hop for the whole search (each hop costs a GIL hand-over under load)
        return _with_thumbnails(await run_in_threadpool(search_cases, state.services, asked), body.index)
    form = await request.form(max_files=1)
    image = form_file(form, "image", "a file is required (or send JSON with a text)")
    index = str(form.get("index") or "demo")
    k = form_int(form.get("k"), "k", 1, 100, SearchConfig.k) or SearchConfig.k
    text = str(form.get("text") or "") or None
    filters = parse_filters(str(form.get("filters") or "") or None)
    asked = SearchRequest(index, text=text, k=k, filters=filters)
    result = await run_in_threadpool(_search_upload, state, asked, image)
    return _with_thumbnails(result, index, query=image.filename or "upload")  # not our temp path


@router.post(
    "/reports",
    response_model=responses.ReportAnswer,
    summary="A grounded draft report for an image: findings with citations, gate, evidence",
)
async def write_report(
    state: State,
    image: Annotated[UploadFile, File(description="PNG, JPEG, DICOM or NIfTI")],
    index: Annotated[str, Form()] = "demo",
    notes: Annotated[
        str | None,
        Form(description="the radiologist's findings, shorthand allowed: the report is written from them (notes mode)"),
    ] = None,
    max_new_tokens: Annotated[
        int | None, Form(ge=8, le=512, description="default: the writer's config (as the CLI's --max-new-tokens)")
    ] = None,
) -> JsonObject:
    def write() -> JsonObject:
        state.services.open_store(index)  # an unknown index is a 404 before the LLM is loaded
        writer = state.writer(index)
        with query_image(state, image) as path, state.report_lock:
            asked = reporting.ReportRequest(path, notes, max_new_tokens=max_new_tokens)
            return reporting.write_report(writer, index, asked).as_json()

    return await run_in_threadpool(write)


@router.get(
    "/concepts/{concept_id}",
    response_model=responses.ConceptAnswer,
    summary="An ontology concept, grounded: ancestors, locations, archive statistics",
)
def get_concept(concept_id: str, state: State, index: str | None = None) -> JsonObject:
    from kgreport.knowledge.grounding import ground_concept

    if index is not None:
        state.services.open_store(index)  # an unknown index is 404 index_not_found, as on every route
    grounding = ground_concept(state.services.ontology_graph, concept_id, index=index)
    if grounding.reason:
        raise ApiError(404, "concept_not_found", grounding.reason)
    return grounding.as_json()


@router.post(
    "/render",
    summary="A PNG preview of an uploaded image (middle slice of a volume; CT window preset)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
async def render(
    state: State,
    image: Annotated[UploadFile, File()],
    window: Annotated[str | None, Form(description="lung, mediastinum, bone, brain, abdomen")] = None,
    size: Annotated[int, Form(ge=32, le=2048)] = 512,
) -> Response:
    from kgreport.retrieval.imaging import load_image

    def render_png() -> bytes:
        with query_image(state, image) as path:
            return png_preview(load_image(path, max_pixels=state.settings.max_image_pixels), window or None, size)

    return Response(await run_in_threadpool(render_png), media_type="image/png")
