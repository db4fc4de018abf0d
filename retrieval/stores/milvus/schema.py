"""The Milvus collections of a case store: their fields, vector indexes, and rows made from cases.

Images (`<base>_images`): one row per stored image, with its vector, what a hit shows (case, image,
caption, location), the leakage fields (case and patient ids) and lower-cased filter copies.
Cases (`<base>_cases`): one row per case, with its report vector, report sections, metadata, and the
filter values of the case and all its images. The case row is written after its image rows, so a
write cut short leaves images without a case: never shown (hits are read through the case row), and
removed when that case is written again.

Row ids (`pk`) are Milvus's own (auto id, increasing with time), so they also give insertion order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from kgreport.errors import InvalidInput
from kgreport.retrieval.config import IndexParams
from kgreport.retrieval.records import Case, CaseImage
from kgreport.retrieval.stores.milvus.connection import MilvusRow
from kgreport.retrieval.vector_index import auto_nlist

ID_LENGTH = 128  # retrieval.ids allows 1-128 characters
TEXT_LENGTH = 65_535  # Milvus's largest VARCHAR
SHORT = 512
MAX_VALUES = 1024  # distinct modality / body-region values of one case (it and its images)


def _schema(image_fields: bool) -> Any:
    """The fields images and cases share: ids, leakage fields, their lower-cased filter copies."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
    schema.add_field("pk", DataType.INT64, is_primary=True)
    for name in ("case_id", "patient_id", "case_id_lc", "patient_id_lc"):
        schema.add_field(name, DataType.VARCHAR, max_length=ID_LENGTH)
    schema.add_field("image_id" if image_fields else "first_image_id", DataType.VARCHAR, max_length=SHORT)
    for name in ("modality", "body_region"):
        schema.add_field(name, DataType.VARCHAR, max_length=SHORT)
    schema.add_field("metadata", DataType.JSON)
    schema.add_field("meta_lc", DataType.JSON)
    schema.add_field("reported", DataType.BOOL)
    return schema


def image_schema(dim: int) -> Any:
    from pymilvus import DataType

    schema = _schema(image_fields=True)
    for name in ("path", "caption"):
        schema.add_field(name, DataType.VARCHAR, max_length=TEXT_LENGTH)
    for name in ("plane", "location", "modality_lc", "body_region_lc"):
        schema.add_field(name, DataType.VARCHAR, max_length=SHORT)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    return schema


def case_schema(dim: int) -> Any:
    from pymilvus import DataType

    schema = _schema(image_fields=False)
    schema.add_field("report_text", DataType.VARCHAR, max_length=TEXT_LENGTH)
    schema.add_field("report", DataType.JSON)
    for name in ("modality_lc", "body_region_lc"):  # the case's own value and all its images'
        schema.add_field(name, DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_VALUES, max_length=SHORT)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    return schema


def registry_schema() -> Any:
    """Registry rows: an index's name, manifest and write generation, under an auto id (rows are only
    inserted and deleted, see `registry.py`). Milvus needs a vector field: a 2-d zero."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("name", DataType.VARCHAR, max_length=SHORT)
    schema.add_field("manifest", DataType.JSON)
    schema.add_field("generation", DataType.INT64)
    schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
    return schema


def vector_index(client: Any, kind: str, rows: int, params: IndexParams, field: str = "vector") -> Any:
    """Index parameters for `field`, inner product: exact (FLAT), HNSW, or IVF_FLAT with ≈ 4·√rows lists.

    HNSW above the exact threshold: Milvus indexes each sealed segment apart, and an IVF whose `nlist` is
    fitted to the whole collection is wrong for every segment (recall@10 0.78-0.86 at 100k, varying with how
    rows fell into segments), while HNSW needs no size (recall@10 1.000 at 100k, ef 64)."""
    index_params = client.prepare_index_params()
    if kind == "flat":
        index_params.add_index(field, index_type="FLAT", metric_type="IP")
    elif kind == "hnsw":
        hnsw = {"M": params.hnsw_m, "efConstruction": params.hnsw_ef_construction}
        index_params.add_index(field, index_type="HNSW", metric_type="IP", params=hnsw)
    else:
        index_params.add_index(
            field, index_type="IVF_FLAT", metric_type="IP", params={"nlist": params.nlist or auto_nlist(rows)}
        )
    return index_params


def search_params(kind: str, k: int, params: IndexParams) -> dict[str, object]:
    """What a search of an index of this kind is given: HNSW's ef (at least k), IVF's nprobe (an index
    an earlier version made, until its next write)."""
    by_kind: dict[str, dict[str, int]] = {
        "flat": {},
        "hnsw": {"ef": max(params.hnsw_ef, k)},
        "ivf": {"nprobe": params.nprobe},
    }
    return {"metric_type": "IP", "params": by_kind[kind]}


def _lower(value: Any) -> str:
    return str(value).lower() if value is not None else ""


class FieldTooLongError(InvalidInput):
    """A text longer than a Milvus VARCHAR field holds (a report, a caption, an id)."""

    code = "bad_request"  # the answer it always had (it was a plain ValueError)


def _text(value: Any, what: str, limit: int = TEXT_LENGTH) -> str:
    text = "" if value is None else str(value)
    if len(text.encode("utf-8")) > limit:
        raise FieldTooLongError(f"{what} is longer than the {limit} bytes a Milvus text field holds")
    return text


def _lower_metadata(*layers: Mapping[str, Any]) -> dict[str, str]:
    """Lower-cased string values, later layers winning: an image's own metadata over its case's."""
    merged: dict[str, str] = {}
    for layer in layers:
        merged.update({str(k): _lower(v) for k, v in layer.items() if v is not None})
    return merged


def image_row(case: Case, image: CaseImage, vector: np.ndarray) -> MilvusRow:
    modality, body_region = image.modality or case.modality, image.body_region or case.body_region
    location = image.metadata.get("location")
    return {
        "case_id": case.case_id,
        "patient_id": case.patient_id or "",
        "image_id": image.image_id,
        "path": _text(image.path, f"image {image.image_id}: path"),
        "caption": _text(image.caption, f"image {image.image_id}: caption"),
        "modality": modality or "",
        "body_region": body_region or "",
        "plane": image.plane or "",
        "location": location if isinstance(location, str) else "",
        "metadata": json.loads(json.dumps(image.metadata, default=str)),
        "reported": not case.report.is_empty(),
        "case_id_lc": case.case_id.lower(),
        "patient_id_lc": _lower(case.patient_id),
        "modality_lc": _lower(modality),
        "body_region_lc": _lower(body_region),
        "meta_lc": _lower_metadata(case.metadata, image.metadata),
        "vector": vector.astype(np.float32).tolist(),
    }


def case_row(case: Case, image_ids: list[str], vector: np.ndarray) -> MilvusRow:
    images = case.images
    meta: dict[str, list[str]] = {}
    for layer in (case.metadata, *(image.metadata for image in images)):
        for key, value in _lower_metadata(layer).items():
            values = meta.setdefault(key, [])
            if value not in values:
                values.append(value)
    return {
        "case_id": case.case_id,
        "patient_id": case.patient_id or "",
        "first_image_id": image_ids[0] if image_ids else "",
        "modality": case.modality or "",
        "body_region": case.body_region or "",
        "report_text": _text(case.report.text(), f"case {case.case_id}: report"),
        "report": case.report.as_dict(),
        "metadata": json.loads(json.dumps(case.metadata, default=str)),
        "reported": not case.report.is_empty(),
        "case_id_lc": case.case_id.lower(),
        "patient_id_lc": _lower(case.patient_id),
        "modality_lc": sorted({_lower(v) for v in (case.modality, *(i.modality for i in images)) if v}),
        "body_region_lc": sorted({_lower(v) for v in (case.body_region, *(i.body_region for i in images)) if v}),
        "meta_lc": meta,
        "vector": vector.astype(np.float32).tolist(),
    }
