"""The SQLite side of a case store: one connection, its transactions, and the case and image rows.

`store.sqlite` is the store's source of truth; the FAISS files are derived from it (`faiss_mirror.py`).
Every write runs in one transaction that also bumps a `generation` counter in `meta`, so another handle,
or the FAISS copy, can tell that something changed and how far it is behind.

`CaseRows` is not locked by itself: `CaseStore` holds one lock around every call, which also keeps the
FAISS update of a write next to its commit.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from kgreport.errors import Conflict, InvalidInput
from kgreport.retrieval.records import Case, CaseImage, ImageRow, StoredCase, StoredImage
from kgreport.retrieval.stores.local.rows import IN_LIST, SCHEMA, to_blob, unit_vector

PreparedCase = tuple[Case, list[tuple[CaseImage, np.ndarray]], np.ndarray]  # case, (image, unit vector), report
RowVectors = list[tuple[int, np.ndarray]]  # (row id, unit vector) per added row

# An image-only case (a study indexed without a report) is stored with report_text '' and a zero report
# vector. Searches that rank cases by their report leave these cases out by id (`StoreQueries`), and `info()`
# counts them: this partial index answers both without reading the case rows (their vector pages).
IMAGE_ONLY = "report_text = ''"
IMAGE_ONLY_SCHEMA = f"CREATE INDEX IF NOT EXISTS cases_image_only ON cases(id) WHERE {IMAGE_ONLY};"


class DuplicateCaseError(Conflict, ValueError):
    """A case id that is already stored (or given twice in one batch)."""

    code = "case_exists"


class DuplicateImageError(InvalidInput):
    """A case that names one image id twice."""

    code = "bad_request"  # the answer it always had (it was a plain ValueError)


def prepare_batch(
    items: Sequence[tuple[Case, Mapping[str, np.ndarray], np.ndarray]], image_dim: int, text_dim: int
) -> list[PreparedCase]:
    """Validate a batch before touching the database: dimensions, finiteness, duplicate ids. Vectors come
    back unit length (what SQLite stores is exactly what FAISS searches); images without a vector are
    dropped, as they are not stored. A case with an empty report (image-only) gets a zero report vector,
    whatever was given: it has no text to be found by."""
    seen: set[str] = set()
    out = []
    for case, image_vectors, text_vector in items:
        if case.case_id in seen:
            raise DuplicateCaseError(f"case {case.case_id} appears twice in one batch")
        seen.add(case.case_id)
        image_ids = [image.image_id for image in case.images]
        if len(set(image_ids)) != len(image_ids):
            raise DuplicateImageError(f"case {case.case_id}: duplicate image ids")
        images = [
            (image, unit_vector(image_vectors[image.image_id], image_dim, f"image {image.image_id}"))
            for image in case.images
            if image_vectors.get(image.image_id) is not None
        ]
        text = unit_vector(text_vector, text_dim, f"case {case.case_id}: report")
        out.append((case, images, np.zeros_like(text) if case.report.is_empty() else text))
    return out


class CaseRows:
    """The connection to `store.sqlite`: transactions, the generation counter, case and image rows."""

    def __init__(self, path: Path) -> None:
        # Autocommit mode (isolation_level=None): transactions are the explicit BEGIN/COMMIT below.
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA + IMAGE_ONLY_SCHEMA)
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    # -- transactions and the generation ----------------------------------------------------------------
    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: every SELECT inside sees one consistent state (WAL snapshot)."""
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    @contextmanager
    def write(self) -> Iterator[int]:
        """A write transaction that bumps the generation; yields the generation it started from."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            before = self.generation()
            yield before
            self.db.execute(
                "INSERT INTO meta(key, value) VALUES('generation', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(before + 1),),
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def generation(self) -> int:
        """How many write transactions the store has committed."""
        row = self.db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return int(row["value"]) if row else 0

    def count(self, table: str) -> int:
        return int(self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # fixed table names

    def count_image_only(self) -> int:
        """How many cases are stored without a report (read from the partial index alone)."""
        return int(self.db.execute(f"SELECT COUNT(*) FROM cases WHERE {IMAGE_ONLY}").fetchone()[0])

    # -- writes (inside `write()`) -------------------------------------------------------------------------
    def insert(
        self, prepared: Sequence[PreparedCase], *, replace: bool, index_name: str
    ) -> tuple[tuple[list[int], list[int]], tuple[RowVectors, RowVectors]]:
        """Insert a validated batch; ((removed image rows, removed case rows), (added image rows, added case
        rows)). A stored case id raises DuplicateCaseError unless `replace`, which deletes the old case."""
        removed: tuple[list[int], list[int]] = ([], [])
        added: tuple[RowVectors, RowVectors] = ([], [])
        for case, images, text_vector in prepared:
            old = self.db.execute("SELECT id FROM cases WHERE case_id=?", (case.case_id,)).fetchone()
            if old is not None:
                if not replace:
                    raise DuplicateCaseError(f"case {case.case_id} is already in index {index_name}")
                removed[0].extend(self.image_pks(old["id"]))
                removed[1].append(old["id"])
                self.db.execute("DELETE FROM cases WHERE id=?", (old["id"],))  # images cascade
            case_pk = self._insert_case(case, text_vector)
            added[1].append((case_pk, text_vector))
            for image, vector in images:
                added[0].append((self._insert_image(case_pk, case, image, vector), vector))
        return removed, added

    def _insert_case(self, case: Case, text_vector: np.ndarray) -> int:
        cursor = self.db.execute(
            "INSERT INTO cases(case_id, patient_id, modality, body_region, report_json, report_text,"
            " metadata_json, text_vector) VALUES (?,?,?,?,?,?,?,?)",
            (
                case.case_id,
                case.patient_id,
                case.modality,
                case.body_region,
                json.dumps(case.report.as_dict()),
                case.report.text(),
                json.dumps(case.metadata, default=str),
                to_blob(text_vector),
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def _insert_image(self, case_pk: int, case: Case, image: CaseImage, vector: np.ndarray) -> int:
        cursor = self.db.execute(
            "INSERT INTO images(case_pk, image_id, path, caption, modality, body_region, plane,"
            " metadata_json, vector) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                case_pk,
                image.image_id,
                str(image.path),
                image.caption,
                image.modality or case.modality,
                image.body_region or case.body_region,
                image.plane,
                json.dumps(image.metadata, default=str),
                to_blob(vector),
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def image_pks(self, case_pk: int) -> list[int]:
        return [r["id"] for r in self.db.execute("SELECT id FROM images WHERE case_pk=?", (case_pk,))]

    def delete(self, case_id: str) -> tuple[list[int], list[int]] | None:
        """Delete a case and its images; (their image row ids, [its case row id]), or None if not stored."""
        row = self.db.execute("SELECT id FROM cases WHERE case_id=?", (case_id,)).fetchone()
        if row is None:
            return None
        image_pks = self.image_pks(row["id"])
        self.db.execute("DELETE FROM cases WHERE id=?", (row["id"],))  # images cascade
        return image_pks, [row["id"]]

    # -- reads -----------------------------------------------------------------------------------------------
    def has_case(self, case_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM cases WHERE case_id=?", (case_id,)).fetchone() is not None

    def case_ids(self) -> set[str]:
        return {r["case_id"] for r in self.db.execute("SELECT case_id FROM cases")}

    def case_ids_in_order(self) -> list[str]:
        return [r["case_id"] for r in self.db.execute("SELECT case_id FROM cases ORDER BY id")]

    def patient_of(self, case_id: str) -> str | None:
        row = self.db.execute("SELECT patient_id FROM cases WHERE case_id=?", (case_id,)).fetchone()
        return row["patient_id"] if row else None

    def case_ids_for_path(self, path: Path) -> set[str]:
        rows = self.db.execute(
            "SELECT c.case_id FROM images i JOIN cases c ON c.id = i.case_pk WHERE i.path = ?", (str(path),)
        ).fetchall()
        return {r["case_id"] for r in rows}

    def get_case(self, case_id: str) -> StoredCase | None:
        """The stored case: its fields, report sections, metadata and images (without vectors)."""
        row = self.db.execute("SELECT * FROM cases WHERE case_id=?", (case_id,)).fetchone()
        if row is None:
            return None
        images = self.db.execute(
            "SELECT image_id, path, caption, modality, body_region, plane, metadata_json "
            "FROM images WHERE case_pk=? ORDER BY id",
            (row["id"],),
        ).fetchall()
        return StoredCase(
            case_id=row["case_id"],
            patient_id=row["patient_id"],
            modality=row["modality"],
            body_region=row["body_region"],
            report=json.loads(row["report_json"]),
            report_text=row["report_text"],
            metadata=json.loads(row["metadata_json"]),
            images=tuple(
                StoredImage(
                    image_id=img["image_id"],
                    path=img["path"],
                    caption=img["caption"],
                    modality=img["modality"],
                    body_region=img["body_region"],
                    plane=img["plane"],
                    metadata=json.loads(img["metadata_json"]),
                )
                for img in images
            ),
        )

    def image_rows_for(self, wanted: list[int]) -> list[ImageRow]:
        """Stored image rows for these image row ids (= FAISS image ids), in the given order; unknown ids
        are skipped."""
        rows = self.db.execute(
            "SELECT i.id, c.case_id, c.patient_id, i.image_id, i.path, i.caption,"
            " COALESCE(i.modality, c.modality) AS modality,"
            " COALESCE(i.body_region, c.body_region) AS body_region, i.plane, i.metadata_json"
            f" FROM images i JOIN cases c ON c.id = i.case_pk WHERE i.id IN {IN_LIST}",
            (json.dumps(wanted),),
        ).fetchall()
        by_id = {
            r["id"]: ImageRow(
                id=r["id"],
                case_id=r["case_id"],
                patient_id=r["patient_id"],
                image_id=r["image_id"],
                path=r["path"],
                caption=r["caption"],
                modality=r["modality"],
                body_region=r["body_region"],
                plane=r["plane"],
                metadata=json.loads(r["metadata_json"]),
            )
            for r in rows
        }
        return [by_id[i] for i in wanted if i in by_id]
