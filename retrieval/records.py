"""Plain records that cross layers: a case from an archive, its images, its report, search hits.

All are frozen dataclasses so they can be hashed, compared in tests and passed between threads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypedDict

from kgreport.json_types import JsonObject
from kgreport.retrieval.ids import check_id

REPORT_SECTIONS: tuple[str, ...] = ("history", "findings", "impression", "diagnosis")


@dataclass(frozen=True)
class ReportSections:
    """A radiology report split into its sections; any section may be empty."""

    history: str = ""
    findings: str = ""
    impression: str = ""
    diagnosis: str = ""

    def text(self) -> str:
        """The report as one string, sections in reading order, headed by their names."""
        parts = [
            f"{name.capitalize()}: {getattr(self, name).strip()}"
            for name in REPORT_SECTIONS
            if getattr(self, name).strip()
        ]
        return "\n".join(parts)

    def is_empty(self) -> bool:
        return not any(getattr(self, name).strip() for name in REPORT_SECTIONS)

    def as_dict(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in REPORT_SECTIONS}


@dataclass(frozen=True)
class CaseImage:
    """One image (2D file) or volume (DICOM series folder, NIfTI file) of a case.

    `path` is what `retrieval.imaging.load_image` opens; `caption` is the image's own legend
    (MedPix has one per image), used as the text side of image–text training pairs.
    """

    image_id: str
    path: Path
    caption: str = ""
    modality: str | None = None
    body_region: str | None = None
    plane: str | None = None
    metadata: JsonObject = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Case:
    """A prior case of an archive: its images and the report written for them."""

    case_id: str
    images: tuple[CaseImage, ...]
    report: ReportSections
    patient_id: str | None = None
    modality: str | None = None
    body_region: str | None = None
    metadata: JsonObject = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        # Every way into an index builds a Case, so the id rule is enforced once, here.
        check_id(self.case_id, "case id")
        if self.patient_id is not None:
            check_id(self.patient_id, "patient id", f"case {self.case_id}")


class ImageRow(TypedDict):
    """A stored image's row by its vector id (`image_rows_for`): what the index holds beside the vector."""

    id: int  # the image's vector id in the store's image index
    case_id: str
    patient_id: str | None
    image_id: str
    path: str
    caption: str | None
    modality: str | None  # the image's own, else its case's
    body_region: str | None
    plane: str | None
    metadata: JsonObject


@dataclass(frozen=True)
class StoredImage:
    """An image as a case store keeps it (no vectors): `path` is where the store reads it from."""

    image_id: str
    path: str
    caption: str | None = None
    modality: str | None = None
    body_region: str | None = None
    plane: str | None = None
    metadata: JsonObject = field(default_factory=dict)


@dataclass(frozen=True)
class StoredCase:
    """A case as a case store keeps it (`get_case`): the same record from either backend."""

    case_id: str
    patient_id: str | None
    modality: str | None
    body_region: str | None
    report: dict[str, str]  # section → text (findings, impression, diagnosis, ...)
    report_text: str
    metadata: JsonObject
    images: tuple[StoredImage, ...]

    def to_case(self) -> Case:
        """The `Case` it was ingested from, images at their stored paths: what re-embedding it needs."""
        return Case(
            case_id=self.case_id,
            patient_id=self.patient_id,
            modality=self.modality,
            body_region=self.body_region,
            report=ReportSections(**{k: v for k, v in self.report.items() if k in REPORT_SECTIONS}),
            metadata=dict(self.metadata),
            images=tuple(
                CaseImage(
                    image_id=img.image_id,
                    path=Path(img.path),
                    caption=img.caption or "",
                    modality=img.modality,
                    body_region=img.body_region,
                    plane=img.plane,
                    metadata=dict(img.metadata),
                )
                for img in self.images
            ),
        )

    def as_json(self) -> JsonObject:
        return asdict(self)


@dataclass(frozen=True)
class SkippedItem:
    """Something an archive reader or the ingest pipeline could not use, and why."""

    source: str
    reason: str


@dataclass(frozen=True)
class Hit:
    """One search result: a stored image of a prior case, with its similarity score."""

    case_id: str
    image_id: str
    score: float
    modality: str | None
    body_region: str | None
    report: str
    patient_id: str | None = None
    caption: str = ""
    location: str | None = None  # the image's finer location label where its archive gives one (MedPix)

    def as_json(self) -> JsonObject:
        return {
            "case_id": self.case_id,
            "image_id": self.image_id,
            "score": round(float(self.score), 6),
            "modality": self.modality,
            "body_region": self.body_region,
            "report": self.report,
        }


@dataclass(frozen=True)
class Prediction:
    """Modality, body region and (where the archive labels it) fine location voted by the nearest
    stored images, with the vote's share."""

    modality: str | None
    modality_confidence: float
    body_region: str | None
    body_region_confidence: float
    location: str | None = None
    location_confidence: float = 0.0

    def as_json(self) -> JsonObject:
        return {
            "modality": self.modality,
            "modality_confidence": round(self.modality_confidence, 4),
            "body_region": self.body_region,
            "body_region_confidence": round(self.body_region_confidence, 4),
            "location": self.location,
            "location_confidence": round(self.location_confidence, 4),
        }


@dataclass(frozen=True)
class SearchResult:
    """The answer to one query."""

    query: str
    hits: tuple[Hit, ...]
    predicted: Prediction

    def as_json(self) -> JsonObject:
        return {"query": self.query, "hits": [h.as_json() for h in self.hits], "predicted": self.predicted.as_json()}


@dataclass(frozen=True)
class IndexInfo:
    """What a case store says of itself (`info()`): counts, dimensions, encoders, index kinds, sizes and
    generations. The same record from either backend; what one backend cannot know is None."""

    name: str
    path: str  # where the server keeps it: a folder, or milvus://…; never shown to a REST client
    backend: str  # "local" (SQLite + FAISS folders) or "milvus"
    cases: int
    cases_with_report: int
    cases_image_only: int
    images: int
    image_dim: int
    text_dim: int
    image_encoder: str
    image_encoder_fingerprint: str | None
    text_encoder: str
    image_index: str  # "flat" (exact), "ivf" (FAISS; Milvus indexes of earlier versions) or "hnsw" (Milvus)
    text_index: str
    generation: int  # bumped by every committed write
    flushed_generation: int | None  # local: the generation the FAISS files on disk hold
    bytes_on_disk: int | None
    files: dict[str, int]  # local: file name → bytes
    memory_bytes: int | None
    created: str | None

    def as_json(self) -> JsonObject:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}
