"""The read queries behind a case store's searches: metadata filters and exclusions as FAISS id sets,
hits read back for the ids FAISS found, and stored vectors for exact rescoring.

Everything here is SQL over the store's connection; FAISS is searched by `CaseStore`, which holds its lock
around every call. Id lists travel as one JSON-array parameter (`IN_LIST`), so there is no limit on
their length.

Image-only cases (stored without a report, with a zero report vector) are left out of every search that
reads the report side: their ids join the excluded set (`SearchScope.reported_only`), so they are
never found by a text query, whatever the scores, and never rescored by a report vector they do not have.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kgreport.retrieval.records import Hit
from kgreport.retrieval.stores.local.rows import IN_LIST, from_blob, json_list
from kgreport.retrieval.stores.local.rows_db import IMAGE_ONLY
from kgreport.retrieval.stores.scope import SearchScope


def filter_sql(space: str, filters: Mapping[str, str | None]) -> tuple[list[str], list[Any], bool]:
    """WHERE clauses for case-insensitive equality filters, their arguments, whether they read `cases c`.

    Image search: an image's own modality/body region (it stores its case's when it has none) and
    metadata (its own value, else its case's). Text search: the case matches if its own value or
    any of its images' values does. The keys, their count and the values' lengths were checked by the
    `SearchScope` (keys go into a JSON path; the count bounds the SQL's size).
    """
    clauses: list[str] = []
    args: list[Any] = []
    needs_cases = False
    for key, value in filters.items():
        if value is None:
            continue  # no constraint
        text, path = str(value), f'$."{key}"'
        if key in {"modality", "body_region"} and space == "image":
            clauses.append(f"lower(i.{key}) = lower(?)")  # served by the lower(...) expression index
            args.append(text)
            continue
        needs_cases = True
        if key in {"patient_id", "case_id"}:
            clauses.append(f"lower(c.{key}) = lower(?)")
            args.append(text)
        elif key in {"modality", "body_region"}:
            clauses.append(
                f"(lower(c.{key}) = lower(?) OR c.id IN (SELECT case_pk FROM images WHERE lower({key}) = lower(?)))"
            )
            args += [text, text]
        elif space == "image":
            clauses.append(
                "lower(COALESCE(json_extract(i.metadata_json, ?), json_extract(c.metadata_json, ?))) = lower(?)"
            )
            args += [path, path, text]
        else:
            clauses.append(
                "(lower(json_extract(c.metadata_json, ?)) = lower(?) OR c.id IN"
                " (SELECT case_pk FROM images WHERE lower(json_extract(metadata_json, ?)) = lower(?)))"
            )
            args += [path, text, path, text]
    return clauses, args, needs_cases


class StoreQueries:
    """Search-side reads of one store's rows; `image_dim`/`text_dim` size the vectors it returns."""

    def __init__(self, db: sqlite3.Connection, image_dim: int, text_dim: int) -> None:
        self.db = db
        self.image_dim = image_dim
        self.text_dim = text_dim

    # -- filters and exclusions ------------------------------------------------------------------------------
    def id_sets(self, space: str, scope: SearchScope) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(allowed FAISS ids or None for all, excluded FAISS ids or None) of one search space; with
        `scope.reported_only` (always in the text space) the rows of image-only cases are excluded too."""
        allowed, excluded = self._filter_sets(space, scope)
        if not (scope.reported_only or space == "text"):
            return allowed, excluded
        unreported = self.image_only_ids(space)
        if not len(unreported):
            return allowed, excluded
        if allowed is not None:
            return np.setdiff1d(allowed, unreported), None
        return None, unreported if excluded is None else np.concatenate([excluded, unreported])

    def image_only_ids(self, space: str) -> np.ndarray:
        """The FAISS ids of image-only cases in `space`: their case rows ("text") or image rows ("image"),
        read from the partial index on image-only cases (and the images' case_pk index)."""
        cases = f"SELECT id FROM cases WHERE {IMAGE_ONLY}"
        sql = cases if space == "text" else f"SELECT id FROM images WHERE case_pk IN ({cases})"
        return np.array([r[0] for r in self.db.execute(sql)], dtype=np.int64)

    def _filter_sets(self, space: str, scope: SearchScope) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(allowed, excluded) FAISS ids for the metadata filters and the leakage exclusions alone."""
        clauses, args, needs_cases = filter_sql(space, scope.filters)
        exclusion, exclusion_args = [], []
        if scope.exclude_case_ids:
            exclusion.append(f"c.case_id IN {IN_LIST}")
            exclusion_args.append(json_list(scope.exclude_case_ids))
        if scope.exclude_patient_ids:
            exclusion.append(f"c.patient_id IN {IN_LIST}")
            exclusion_args.append(json_list(scope.exclude_patient_ids))
        if space == "text":
            column, source = "c.id", "cases c"
        else:  # skip the join when no clause reads the case row (it would load each case's vector page)
            column = "i.id"
            source = "images i JOIN cases c ON c.id = i.case_pk" if needs_cases or exclusion else "images i"
        if clauses:  # filters: one allowed set, exclusions folded in
            if exclusion:
                clauses.append(f"NOT ({' OR '.join(exclusion)})")
            sql = f"SELECT {column} FROM {source} WHERE {' AND '.join(clauses)}"
            return np.array([r[0] for r in self.db.execute(sql, args + exclusion_args)], dtype=np.int64), None
        if exclusion:
            sql = f"SELECT {column} FROM {source} WHERE {' OR '.join(exclusion)}"
            return None, np.array([r[0] for r in self.db.execute(sql, exclusion_args)], dtype=np.int64)
        return None, None

    # -- hits ------------------------------------------------------------------------------------------------
    def hits_by_row(self, sql: str, ids: Sequence[int], scores: Sequence[float]) -> dict[int, Hit]:
        """{row id: hit} in the order of `ids`, read with `sql` (`IMAGE_HIT_SQL` or `TEXT_HIT_SQL`); rows
        that no longer exist are left out."""
        if not ids:
            return {}
        rows = {r["pk"]: r for r in self.db.execute(sql, (json.dumps([int(i) for i in ids]),))}
        return {
            int(i): Hit(
                case_id=r["case_id"],
                image_id=r["image_id"] or "",
                score=float(s),
                modality=r["modality"],
                body_region=r["body_region"],
                report=r["report_text"],
                patient_id=r["patient_id"],
                caption=r["caption"] or "",
                location=r["location"] if isinstance(r["location"], str) else None,
            )
            for i, s in zip(ids, scores, strict=True)
            if (r := rows.get(int(i))) is not None
        }

    # -- stored vectors (for exact rescoring) ------------------------------------------------------------------
    def image_ids_of(self, case_pks: str, ids: Sequence[int]) -> list[int]:
        """Image row ids whose case row is in `case_pks` (SQL over one JSON-list parameter: `ids`)."""
        if not ids:
            return []
        rows = self.db.execute(
            f"SELECT id FROM images WHERE case_pk IN {case_pks} ORDER BY id", (json_list(ids),)
        ).fetchall()
        return [r[0] for r in rows]

    def rescoring_rows(
        self, image_ids: Sequence[int], *, text: bool
    ) -> tuple[list[str], np.ndarray, np.ndarray | None]:
        """For image row ids: their case ids, stored image vectors and (with `text`) their cases' report
        vectors, in order, from one query. Unknown ids get an empty case id and zero vectors."""
        case_ids = [""] * len(image_ids)
        images = np.zeros((len(image_ids), self.image_dim), dtype=np.float32)
        texts = np.zeros((len(image_ids), self.text_dim), dtype=np.float32) if text else None
        if not image_ids:
            return case_ids, images, texts
        text_column = ", c.text_vector" if text else ""
        rows = self.db.execute(
            f"SELECT CAST(j.key AS INTEGER) AS n, c.case_id, i.vector{text_column} FROM json_each(?) j"
            " JOIN images i ON i.id = j.value JOIN cases c ON c.id = i.case_pk",
            (json_list(image_ids),),
        ).fetchall()
        if not rows:
            return case_ids, images, texts
        found = [row["n"] for row in rows]
        for n, row in zip(found, rows, strict=True):
            case_ids[n] = row["case_id"]
        # One buffer per column rather than an array per row: this runs for every search's candidates.
        images[found] = from_blob(b"".join(row["vector"] for row in rows)).reshape(len(rows), -1)
        if texts is not None:
            texts[found] = from_blob(b"".join(row["text_vector"] for row in rows)).reshape(len(rows), -1)
        return case_ids, images, texts

    def case_text_vectors(self, case_ids: Sequence[str]) -> np.ndarray:
        """Stored (unit) report vectors for these case ids, in order; zeros for unknown ids."""
        out = np.zeros((len(case_ids), self.text_dim), dtype=np.float32)
        if not case_ids:
            return out
        found = {
            r["case_id"]: from_blob(r["text_vector"])
            for r in self.db.execute(
                f"SELECT case_id, text_vector FROM cases WHERE case_id IN {IN_LIST}", (json_list(case_ids),)
            )
        }
        for n, case_id in enumerate(case_ids):
            if case_id in found:
                out[n] = found[case_id]
        return out
