"""The reads behind a Milvus case store's searches: hits for the row ids a search found, and stored vectors
for exact rescoring. Every read goes through the case rows, so image rows left by a write cut short (no
case row yet) are never shown. Each read is given the store's read guarantee (`connection.py`): the
latest write it must see, so it need not wait for Milvus's time tick. Image rows and the image keys of
case rows, once read, are kept by primary key (`row_cache.py`): a text search then costs its two searches
and one read of its hits' case rows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from kgreport.retrieval.records import Hit, ImageRow, StoredCase, StoredImage
from kgreport.retrieval.stores.milvus.connection import MilvusConnection, MilvusRow
from kgreport.retrieval.stores.milvus.filters import id_list, text_list
from kgreport.retrieval.stores.milvus.row_cache import RowCache

IMAGE_FIELDS = [
    "pk",
    "case_id",
    "patient_id",
    "image_id",
    "path",
    "caption",
    "modality",
    "body_region",
    "plane",
    "metadata",
]
ROW_CACHE = 20_000  # image rows kept with their vectors (about 2.5 KB each at 256 + 384 dimensions)
HIT_FIELDS = ["pk", "case_id", "image_id", "modality", "body_region", "patient_id", "caption", "location"]


def none_if_empty(value: Any) -> Any:
    """Milvus text fields hold "" where the embedded store holds NULL: read them back as None."""
    return value if value != "" else None


class MilvusReads:
    """Search-side reads of one index's two collections; `image_dim`/`text_dim` size the vectors returned."""

    def __init__(
        self,
        connection: MilvusConnection,
        images: str,
        cases: str,
        image_dim: int,
        text_dim: int,
        guarantee: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.connection = connection
        self.images, self.cases = images, cases
        self.image_dim, self.text_dim = image_dim, text_dim
        self.guarantee = guarantee
        self._image_rows: RowCache[int, MilvusRow] = RowCache(ROW_CACHE)  # + "report_vector"
        self._case_images: RowCache[int, list[int]] = RowCache(ROW_CACHE)  # case row key -> its image keys

    def _query(self, collection: str, expression: str, fields: list[str]) -> list[MilvusRow]:
        return self.connection.query(collection, expression, fields, guarantee=self.guarantee())

    def stored(self, case_ids: Collection[str]) -> set[str]:
        """Which of these case ids have a case row (image rows without one belong to a cut-short write)."""
        if not case_ids:
            return set()
        return {str(r["case_id"]) for r in self._query(self.cases, text_list("case_id", case_ids), ["case_id"])}

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
        rows = self._query(self.cases, text_list("case_id", case_ids), ["case_id", "report_text", "patient_id"])
        return {str(r["case_id"]): r for r in rows}

    def image_hits(self, image_ids: Sequence[int], scores: Sequence[float]) -> dict[int, Hit]:
        """{image id: hit} with the given scores, in order; rows that no longer exist are left out."""
        if not image_ids:
            return {}
        rows = self._image_rows_for(image_ids)
        cases = self._reports({str(r["case_id"]) for r in rows.values()})  # read each time: deletes show at once
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
        rows = {int(r["pk"]): r for r in self._query(self.cases, id_list("pk", case_pks), fields)}
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
        return sorted(int(r["pk"]) for r in self._query(self.images, text_list("case_id", case_ids), ["pk"]))

    def image_ids_of_cases(self, case_row_ids: Sequence[int]) -> list[int]:
        if not case_row_ids:
            return []
        known = self._case_images.get_many(int(i) for i in case_row_ids)
        missing = [int(i) for i in case_row_ids if int(i) not in known]
        if missing:
            case_ids = {
                int(r["pk"]): str(r["case_id"])
                for r in self._query(self.cases, id_list("pk", missing), ["pk", "case_id"])
            }
            images: dict[str, list[int]] = {case_id: [] for case_id in case_ids.values()}
            if images:
                for r in self._query(self.images, text_list("case_id", images), ["pk", "case_id"]):
                    images[str(r["case_id"])].append(int(r["pk"]))
            found = {pk: sorted(images[case_id]) for pk, case_id in case_ids.items()}
            self._case_images.put_many(found)
            known |= found
        return sorted({i for ids in known.values() for i in ids})

    def sibling_image_ids(self, image_ids: Sequence[int]) -> list[int]:
        if not image_ids:
            return []
        rows = self._query(self.images, id_list("pk", image_ids), ["case_id"])
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
        rows = self._image_rows_for(image_ids)
        for n, i in enumerate(image_ids):
            row = rows.get(int(i))
            if row is None:
                continue
            case_ids[n] = row["case_id"]
            images[n] = row["vector"]
            if texts is not None:
                texts[n] = row["report_vector"]
        return case_ids, images, texts

    def _image_rows_for(self, image_ids: Sequence[int]) -> dict[int, MilvusRow]:
        """Image rows (hit fields, vector, and their case's report vector) by key, from the cache or one read
        of each collection for those it lacks; rows without a case row (a write cut short) are left out."""
        rows = self._image_rows.get_many(int(i) for i in image_ids)
        missing = [int(i) for i in image_ids if int(i) not in rows]
        if missing:
            read = self._query(self.images, id_list("pk", missing), [*HIT_FIELDS, "vector"])
            reports = self._case_vectors({str(r["case_id"]) for r in read})
            found = {
                int(r["pk"]): {
                    **r,
                    "vector": np.asarray(r["vector"], np.float32),
                    "report_vector": reports[r["case_id"]],
                }
                for r in read
                if r["case_id"] in reports
            }
            self._image_rows.put_many(found)
            rows |= found
        return rows

    def _case_vectors(self, case_ids: Collection[str]) -> dict[str, np.ndarray]:
        if not case_ids:
            return {}
        rows = self._query(self.cases, text_list("case_id", case_ids), ["case_id", "vector"])
        return {str(r["case_id"]): np.asarray(r["vector"], dtype=np.float32) for r in rows}

    def case_text_vectors(self, case_ids: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(case_ids), self.text_dim), dtype=np.float32)
        found = self._case_vectors(set(case_ids))
        for n, case_id in enumerate(case_ids):
            if case_id in found:
                out[n] = found[case_id]
        return out

    # -- whole rows (strong reads: a case page, the benchmark's recall) ------------------------------
    def stored_case(self, case_id: str) -> StoredCase | None:
        """The stored case, as `CaseStore.get_case` gives it: fields, report, metadata, images."""
        fields = ["case_id", "patient_id", "modality", "body_region", "report", "report_text", "metadata"]
        rows = self.connection.query(self.cases, text_list("case_id", [case_id]), fields, limit=1)
        if not rows:
            return None
        row = rows[0]
        images = sorted(
            self.connection.query(self.images, text_list("case_id", [case_id]), IMAGE_FIELDS), key=lambda r: r["pk"]
        )
        return StoredCase(
            case_id=row["case_id"],
            patient_id=none_if_empty(row["patient_id"]),
            modality=none_if_empty(row["modality"]),
            body_region=none_if_empty(row["body_region"]),
            report=dict(row["report"]),
            report_text=row["report_text"],
            metadata=dict(row["metadata"]),
            images=tuple(
                StoredImage(
                    image_id=img["image_id"],
                    path=img["path"],
                    caption=none_if_empty(img["caption"]),
                    modality=none_if_empty(img["modality"]),
                    body_region=none_if_empty(img["body_region"]),
                    plane=none_if_empty(img["plane"]),
                    metadata=dict(img["metadata"]),
                )
                for img in images
            ),
        )

    def image_rows(self, ids: Iterable[int]) -> list[ImageRow]:
        """Stored image rows for these image ids, in the given order (unknown ids and orphans skipped)."""
        wanted = [int(i) for i in ids]
        if not wanted:
            return []
        rows = {int(r["pk"]): r for r in self.connection.query(self.images, id_list("pk", wanted), IMAGE_FIELDS)}
        live = self.stored({str(r["case_id"]) for r in rows.values()})
        out = []
        for i in wanted:
            if (row := rows.get(i)) is not None and row["case_id"] in live:
                out.append(
                    ImageRow(
                        id=i,
                        case_id=str(row["case_id"]),
                        patient_id=none_if_empty(row["patient_id"]),
                        image_id=str(row["image_id"]),
                        path=str(row["path"]),
                        caption=none_if_empty(row["caption"]),
                        modality=none_if_empty(row["modality"]),
                        body_region=none_if_empty(row["body_region"]),
                        plane=none_if_empty(row["plane"]),
                        metadata=dict(row["metadata"]),
                    )
                )
        return out
