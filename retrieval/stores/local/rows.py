"""A case store's files and rows: the SQLite schema, the queries that read hits, vectors as blobs, and the
small file helpers the store writes its manifest with. Plain data in, plain data out."""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from kgreport.json_types import JsonMapping
from kgreport.retrieval.vector_index import VectorIndexError

SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id TEXT UNIQUE NOT NULL,
    patient_id TEXT, modality TEXT, body_region TEXT,
    report_json TEXT NOT NULL, report_text TEXT NOT NULL, metadata_json TEXT NOT NULL DEFAULT '{}',
    text_vector BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_pk INTEGER NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
    image_id TEXT NOT NULL, path TEXT, caption TEXT, modality TEXT, body_region TEXT, plane TEXT,
    metadata_json TEXT NOT NULL DEFAULT '{}', vector BLOB NOT NULL,
    UNIQUE (case_pk, image_id)
);
CREATE INDEX IF NOT EXISTS images_path ON images(path);
CREATE INDEX IF NOT EXISTS cases_patient ON cases(patient_id);
-- Filters compare lower(...) = lower(?): these expression indexes answer them without reading the
-- rows, whose vector blobs would make every filtered search a scan of the whole file.
CREATE INDEX IF NOT EXISTS images_modality_ci ON images(lower(modality));
CREATE INDEX IF NOT EXISTS images_body_region_ci ON images(lower(body_region));
CREATE INDEX IF NOT EXISTS cases_modality_ci ON cases(lower(modality));
CREATE INDEX IF NOT EXISTS cases_body_region_ci ON cases(lower(body_region));
CREATE INDEX IF NOT EXISTS cases_patient_ci ON cases(lower(patient_id));
CREATE INDEX IF NOT EXISTS cases_case_id_ci ON cases(lower(case_id));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Which rows each write added or removed (space 'image' or 'text'), so that another process's copy of
-- the FAISS indexes can apply the change instead of rebuilding. Only recent generations are kept.
CREATE TABLE IF NOT EXISTS changes (
    generation INTEGER NOT NULL, space TEXT NOT NULL, row_id INTEGER NOT NULL, added INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_generation ON changes(generation);
"""

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file

IN_LIST = "(SELECT value FROM json_each(?))"  # one JSON-array parameter: no limit on list length

IMAGE_HIT_SQL = f"""
SELECT i.id AS pk, c.case_id, i.image_id, COALESCE(i.modality, c.modality) AS modality,
       COALESCE(i.body_region, c.body_region) AS body_region, c.report_text, c.patient_id, i.caption,
       json_extract(i.metadata_json, '$.location') AS location
FROM images i JOIN cases c ON c.id = i.case_pk WHERE i.id IN {IN_LIST}
"""
TEXT_HIT_SQL = f"""
SELECT c.id AS pk, c.case_id,
       (SELECT image_id FROM images WHERE case_pk = c.id ORDER BY id LIMIT 1) AS image_id,
       c.modality, c.body_region, c.report_text, c.patient_id, '' AS caption, NULL AS location
FROM cases c WHERE c.id IN {IN_LIST}
"""


def unit_vector(vector: Any, dim: int, what: str) -> np.ndarray:
    """A float32 unit vector of length `dim` (a zero vector stays zero), or a ValueError naming `what`."""
    v = np.asarray(vector, dtype=np.float32)
    if v.shape != (dim,):
        raise VectorIndexError(f"{what}: vector of shape {v.shape}, expected ({dim},)")
    if not np.isfinite(v).all():
        raise VectorIndexError(f"{what}: vector contains NaN or infinity")
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)


def json_list(values: Collection[Any]) -> str:
    return json.dumps([v if isinstance(v, int) else str(v) for v in values])


def file_id(path: Path) -> tuple[int, int]:
    """(device, inode): the same path can name another file after a swap."""
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def write_json_atomic(path: Path, data: JsonMapping) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def sqlite_file_problem(path: Path) -> str | None:
    """Why `path` cannot be a SQLite database, from its size and header alone, or None if it may be one.

    Checked before connecting: SQLite takes a zero-length file for a new, empty database and would write
    a fresh schema into it, so an emptied store would read as an empty index rather than a lost one.
    """
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return "the file is missing"
    except OSError as err:
        return f"the file cannot be read ({err.strerror or err})"
    if not header:
        return "the file is empty (0 bytes)"
    if header != SQLITE_HEADER:
        return "the file is not a SQLite database (no SQLite header)"
    return None
