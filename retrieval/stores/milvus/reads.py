"""The reads behind a Milvus case store's searches: hits for the row ids a search found, and stored vectors
for exact rescoring. Every read goes through the case rows, so image rows left by a write cut short (no
case row yet) are never shown.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from kgreport.retrieval.records import Hit
from kgreport.retrieval.stores.milvus.connection import MilvusConnection, MilvusRow
from kgreport.retrieval.stores.milvus.filters import id_list, text_list

HIT_FIELDS = ["pk", "case_id", "image_id", "modality", "body_region", "patient_id", "caption", "location"]


def none_if_empty(value: Any) -> Any:
    """Milvus text fields hold "" where the embedded store holds NULL: read them back as None."""
    return value if value != "" else None


class MilvusReads:
    """Search-side reads of one index's two collections; `image_dim`/`text_dim` size the vectors returned."""

    def __init__(self, connection: MilvusConnection, images: str, cases: str, image_dim: int, text_dim: int) -> None:
        self.connection = connection
        self.images, self.cases = images, cases
        self.image_dim, self.text_dim = image_dim, text_dim

    def stored(self, case_ids: Collection[str]) -> set[str]:
        """Which of these case ids have a case row (image rows without one belong to a cut-short write)."""
        if not case_ids:
            return set()
        return {
            str(r["case_id"]) for r in self.connection.query(self.cases, text_list("case_id", case_ids), ["case_id"])
        }

    def hits(self, space: str, found: list[tuple[list[int], list[float]]]) -> list[list[Hit]]:
        """Hits of every query from one read of their rows (two reads in all, whatever the query count)."""
        every_id = sorted({i for ids, _ in found for i in ids})
        every_score = [0.0] * len(every_id)
        rows = self.image_hits(every_id, every_score) if space == "image" else self.text_hits(every_id, every_score)
        return [
            [replace(rows[i], score=float(s)) for i, s in zip(ids, scores, strict=True) if i in rows]
            for ids, scores in found
        ]

    def _reports(self, case_ids: Collection[str]) -> dict[str, MilvusRow]:
        if not case_ids:
            return {}
        rows = self.connection.query(
            self.cases, text_list("case_id", case_ids), ["case_id", "report_text", "patient_id"]
        )
        return {str(r["case_id"]): r for r in rows}

    def image_hits(self, image_ids: Sequence[int], scores: Sequence[float]) -> dict[int, Hit]:
        """{image id: hit} with the given scores, in order; rows that no longer exist are left out."""
        if not image_ids:
            return {}
        rows = {int(r["pk"]): r for r in self.connection.query(self.images, id_list("pk", image_ids), HIT_FIELDS)}
        cases = self._reports({str(r["case_id"]) for r in rows.values()})
        hits = {}
        for i, score in zip(image_ids, scores, strict=True):
            row = rows.get(int(i))
            if row is None or (case := cases.get(row["case_id"])) is None:
                continue
            hits[int(i)] = Hit(
                case_id=row["case_id"],
                image_id=row["image_id"],
                score=float(score),
                modality=none_if_empty(row["modality"]),
                body_region=none_if_empty(row["body_region"]),
                report=case["report_text"],
                patient_id=none_if_empty(case["patient_id"]),
                caption=row["caption"] or "",
                location=none_if_empty(row["location"]),
            )
        return hits

    def text_hits(self, case_pks: Sequence[int], scores: Sequence[float]) -> dict[int, Hit]:
        if not case_pks:
            return {}
        fields = ["pk", "case_id", "first_image_id", "modality", "body_region", "report_text", "patient_id"]
        rows = {int(r["pk"]): r for r in self.connection.query(self.cases, id_list("pk", case_pks), fields)}
        return {
            int(i): Hit(
                case_id=row["case_id"],
                image_id=row["first_image_id"],
                score=float(score),
                modality=none_if_empty(row["modality"]),
                body_region=none_if_empty(row["body_region"]),
                report=row["report_text"],
                patient_id=none_if_empty(row["patient_id"]),
            )
            for i, score in zip(case_pks, scores, strict=True)
            if (row := rows.get(int(i))) is not None
        }

    # -- stored vectors (for exact rescoring) -----------------------------------------------------------
    def _images_of_case_ids(self, case_ids: Collection[str]) -> list[int]:
        if not case_ids:
            return []
        return sorted(int(r["pk"]) for r in self.connection.query(self.images, text_list("case_id", case_ids), ["pk"]))

    def image_ids_of_cases(self, case_row_ids: Sequence[int]) -> list[int]:
        if not case_row_ids:
            return []
        rows = self.connection.query(self.cases, id_list("pk", case_row_ids), ["case_id"])
        return self._images_of_case_ids({str(r["case_id"]) for r in rows})

    def sibling_image_ids(self, image_ids: Sequence[int]) -> list[int]:
        if not image_ids:
            return []
        rows = self.connection.query(self.images, id_list("pk", image_ids), ["case_id"])
        return self._images_of_case_ids(self.stored({str(r["case_id"]) for r in rows}))

    def rescoring_rows(
        self, image_ids: Sequence[int], *, text: bool
    ) -> tuple[list[str], np.ndarray, np.ndarray | None]:
        """For image ids: case ids, stored image vectors and (with `text`) report vectors, in order;
        unknown ids get an empty case id and zero vectors."""
        case_ids = [""] * len(image_ids)
        images = np.zeros((len(image_ids), self.image_dim), dtype=np.float32)
        texts = np.zeros((len(image_ids), self.text_dim), dtype=np.float32) if text else None
        if not image_ids:
            return case_ids, images, texts
        rows = {
            int(r["pk"]): r
            for r in self.connection.query(self.images, id_list("pk", image_ids), ["pk", "case_id", "vector"])
        }
        report_vectors = self._case_vectors({str(r["case_id"]) for r in rows.values()})
        for n, i in enumerate(image_ids):
            row = rows.get(int(i))
            if row is None or row["case_id"] not in report_vectors:
                continue
            case_ids[n] = row["case_id"]
            images[n] = row["vector"]
            if texts is not None:
                texts[n] = report_vectors[row["case_id"]]
        return case_ids, images, texts

    def _case_vectors(self, case_ids: Collection[str]) -> dict[str, np.ndarray]:
        if not case_ids:
            return {}
        rows = self.connection.query(self.cases, text_list("case_id", case_ids), ["case_id", "vector"])
        return {str(r["case_id"]): np.asarray(r["vector"], dtype=np.float32) for r in rows}

    def case_text_vectors(self, case_ids: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(case_ids), self.text_dim), dtype=np.float32)
        found = self._case_vectors(set(case_ids))
        for n, case_id in enumerate(case_ids):
            if case_id in found:
                out[n] = found[case_id]
        return out
