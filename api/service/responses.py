"""What each JSON route answers, as pydantic models: `/openapi.json` documents every field a client gets.

The routes declare these as `response_model`s. Each model names the fields the service sends; a field
added later and not named here still reaches the client (`extra="allow"`) and should be named here in the
same change. Only what is open-ended by nature stays a JSON object (`JsonValue`): what a job was asked and
answered, a case's archive metadata, the writer's description.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, JsonValue


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
    params: dict[str, JsonValue] = Field(description="what was asked (the index name, archive, split, ...)")
    state: str = Field(description="queued, running, succeeded, failed or interrupted")
    total: int | None = Field(description="items to do, once known")
    done: int
    progress: float | None = Field(description="done / total, when the total is known")
    result: dict[str, JsonValue] | None = Field(description="a finished build's counts (cases_added, skipped, ...)")
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
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    thumbnail_url: str


class StoredCase(Answer):
    case_id: str
    patient_id: str | None = Field(default=None, description="as stored: PACS cases carry a salted hash")
    modality: str | None = None
    body_region: str | None = None
    report: dict[str, str] = Field(
        default_factory=dict, description="the report's sections (findings, impression, diagnosis, ...)"
    )
    report_text: str | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
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


class Support(Answer):
    stated: str = Field(description="the stated finding")
    kb_finding: str = Field(description="the knowledge base's finding it matched")
    source: str = Field(description="the knowledge base that says so")
    weight: float
    pathognomonic: bool


class DifferentialItem(Answer):
    name: str
    score: float
    sources: dict[str, float] = Field(description="each source's weighted share of the score (image, text, knowledge)")
    case_ids: list[str] = Field(description="similar cases with this diagnosis")
    concept_ids: list[str] = Field(description="the stated findings' concepts")
    diagnosis_id: str | None = Field(description="the graph's concept id of the diagnosis, where it has one")
    synonyms: list[str]
    supports: list[Support] = Field(description="knowledge: the stated findings that suggest it")
    unexplained: list[str] = Field(description="knowledge: stated findings it does not explain")


class Draft(Answer):
    source: str = Field(description="case (a retrieved report) or notes (the radiologist's)")
    case_id: str | None
    text: str


class DraftCandidate(Answer):
    case_id: str
    score: float
    agreement: float = Field(description="how far the other candidates agree with it")
    selected: bool
    text: str


class EvidenceCase(Answer):
    case_id: str
    score: float
    modality: str | None
    body_region: str | None


class EvidenceConcept(Answer):
    concept_id: str
    name: str
    status: str
    votes: int = Field(description="similar cases that state it")


class Evidence(Answer):
    cases: list[EvidenceCase]
    concepts: list[EvidenceConcept]


class ReportBody(Answer):
    mode: str = Field(description="image (a retrieved draft refined) or notes (the radiologist's notes)")
    abstained: bool
    confidence: float | None
    findings: list[ReportSentence]
    impression: str
    differential: list[DifferentialItem] = Field(description="ranked diagnoses")
    differential_weights: dict[str, float] = Field(description="this case's weight of each differential source")
    gate: float | None = Field(description="the refiner's fusion gate (inert: it does not change the answer)")
    draft: Draft | None = Field(description="what was edited")
    candidates: list[DraftCandidate] = Field(description="the retrieved drafts considered")
    removed: list[str]
    impression_items: list[int]
    evidence: Evidence = Field(description="the similar cases and the concepts they state")
    model: dict[str, JsonValue] = Field(description="the writer, its base LLM, how it wrote, and max_new_tokens used")
    limitations: list[str]


class ReportAnswer(Answer):
    index: str
    report: ReportBody
    text: str = Field(description="the report as plain text: Findings, Impression, Differential")
    seconds: float


class ConceptRef(Answer):
    """A related concept: its id and name, with counts or provenance where the relation has them."""

    id: str | None = None
    name: str | None = None


class ConceptArchive(Answer):
    index: str | None = Field(description="the index whose cases are counted, or null for all")
    cases_total: int
    cases: dict[str, int] = Field(description="cases with the concept present, absent, uncertain")
    co_occurring: list[ConceptRef] = Field(description="findings stated in the same cases, with counts")


class ConceptAnswer(Answer):
    concept_id: str
    name: str | None
    source: str | None = Field(description="RadLex, OIFM, ...")
    ancestors: list[ConceptRef]
    locations: list[ConceptRef]
    related_findings: list[ConceptRef]
    differential_diagnoses: list[ConceptRef]
    archive: ConceptArchive
    reason: str | None
