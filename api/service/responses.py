"""What each JSON route answers, as pydantic models: `/openapi.json` documents every field a client gets.

The routes declare these as `response_model`s. Each model names the fields the service sends; a field
added later and not named here still reaches the client (`extra="allow"`) and should be named here in the
same change. Deep, open-ended parts (a report's evidence, a grounding's archive statistics) stay objects
whose keys the route's docs describe.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Answer(BaseModel):
    """A JSON answer: the fields below, plus any the service adds later (never dropped)."""

    model_config = ConfigDict(extra="allow")


# -- health --------------------------------------------------------------------------------------------------
class Health(Answer):
    status: str = Field(examples=["ok"])
    worker_pid: int = Field(description="the server process that answered")


class Readiness(Answer):
    ready: bool
    checks: dict[str, str] = Field(description="each part's 'ok (...)' or 'error: ...'; reports need report_writer")


# -- indexes and jobs ------------------------------------------------------------------------------------------
class Job(Answer):
    id: str
    kind: str = Field(examples=["index_build"])
    params: dict[str, Any] = Field(description="what was asked (the index name, archive, split, ...)")
    state: str = Field(description="queued, running, succeeded, failed or interrupted")
    total: int | None = Field(description="items to do, once known")
    done: int
    progress: float | None = Field(description="done / total, when the total is known")
    result: dict[str, Any] | None = Field(description="a finished build's counts (cases_added, skipped, ...)")
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None


class JobAccepted(Answer):
    job: Job
    status_url: str = Field(description="poll this for the job's state and result")


class IndexInfo(Answer):
    name: str
    status: str = Field(description="'ok', or 'unreadable: why' (the other fields are then absent)")
    cases: int | None = None
    cases_with_report: int | None = None
    cases_image_only: int | None = None
    images: int | None = None
    image_dim: int | None = None
    text_dim: int | None = None
    image_encoder: str | None = None
    text_encoder: str | None = None
    image_index: str | None = Field(default=None, description="flat (exact) or ivf")
    text_index: str | None = None
    generation: int | None = None
    bytes_on_disk: int | None = None
    created: str | float | None = None


class IndexList(Answer):
    indexes: list[IndexInfo]


class CaseAdded(Answer):
    index: str
    cases_added: int
    images_added: int
    cases_already_present: int
    finding_edges: int
    skipped: int
    skipped_reasons: dict[str, int]
    seconds: float


class CasesDeleted(Answer):
    index: str
    deleted: list[str]
    not_found: list[str]


class StoredImage(Answer):
    image_id: str
    caption: str | None = None
    modality: str | None = None
    body_region: str | None = None
    plane: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    thumbnail_url: str


class StoredCase(Answer):
    case_id: str
    patient_id: str | None = Field(default=None, description="as stored: PACS cases carry a salted hash")
    modality: str | None = None
    body_region: str | None = None
    report: dict[str, Any] = Field(
        default_factory=dict, description="the report's sections (findings, impression, diagnosis, ...)"
    )
    report_text: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    images: list[StoredImage]


# -- queries ---------------------------------------------------------------------------------------------------
class Prediction(Answer):
    modality: str | None
    modality_confidence: float
    body_region: str | None
    body_region_confidence: float
    location: str | None
    location_confidence: float


class SearchHit(Answer):
    case_id: str
    image_id: str | None
    score: float
    modality: str | None
    body_region: str | None
    report: str | None
    thumbnail_url: str
    case_url: str


class SearchAnswer(Answer):
    index: str
    query: str
    hits: list[SearchHit]
    predicted: Prediction = Field(description="modality and region voted by the nearest stored images")


class ReportSentence(Answer):
    sentence: str
    status: str = Field(description="present, absent, uncertain, or none (states no finding)")
    concept_ids: list[str]
    cited_case_ids: list[str]
    supported: bool
    unsupported_concept_ids: list[str]
    notes_item: int | None = Field(description="notes mode: the notes item (1-based) this sentence writes out")


class ReportBody(Answer):
    mode: str = Field(description="image (a retrieved draft refined) or notes (the radiologist's notes)")
    abstained: bool
    confidence: float | None
    findings: list[ReportSentence]
    impression: str
    differential: list[dict[str, Any]] = Field(
        description="ranked diagnoses, each with its sources, case_ids, supports, unexplained and synonyms"
    )
    differential_weights: dict[str, float] = Field(description="this case's weight of each differential source")
    gate: float | None = Field(description="the refiner's fusion gate (inert: it does not change the answer)")
    draft: dict[str, Any] | None = Field(description="what was edited: source (case or notes), case_id, text")
    candidates: list[dict[str, Any]]
    removed: list[str]
    impression_items: list[int]
    evidence: dict[str, Any] = Field(description="cases (case_id, score, modality, body_region) and concepts")
    model: dict[str, Any] = Field(description="the writer, its base LLM, how it wrote, and max_new_tokens used")
    limitations: list[str]


class ReportAnswer(Answer):
    index: str
    report: ReportBody
    text: str = Field(description="the report as plain text: Findings, Impression, Differential")
    seconds: float


class ConceptAnswer(Answer):
    concept_id: str
    name: str | None
    source: str | None = Field(description="RadLex, OIFM, ...")
    ancestors: list[dict[str, Any]]
    locations: list[dict[str, Any]]
    related_findings: list[dict[str, Any]]
    differential_diagnoses: list[dict[str, Any]]
    archive: dict[str, Any] = Field(description="cases with the concept present/absent/uncertain, co-occurring")
    reason: str | None
