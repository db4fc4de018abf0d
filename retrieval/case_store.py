"""One named index on disk: SQLite (cases, images, their vectors) + two FAISS indexes derived from it.

Layout of `root/`: `store.sqlite` (the source of truth), `image.faiss` (one vector per stored image,
keyed by the image row id), `text.faiss` (one report vector per case, keyed by the case row id),
`faiss.json` (the SQLite generation the FAISS files reflect) and `manifest.json` (dimensions and
encoder names).

Every write is one SQLite transaction that also bumps a generation counter. `flush()` writes the
FAISS files atomically and then records their generation. On `open()`, FAISS files whose generation
differs from SQLite's (a crash between commit and flush), or that are missing or corrupt, are rebuilt
from the vectors in SQLite: a half-written index is recovered, never served stale.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.records import Case, Hit
from retrieval.vector_index import IndexParams, VectorIndex, VectorIndexError

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
_FILTER_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class IndexNotFoundError(FileNotFoundError):
    """No index at the given path (or name)."""


class DuplicateCaseError(ValueError):
    """A case id that is already stored."""


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _unblob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class CaseStore:
    """Cases, images and their vectors; similarity search with metadata filters and exclusions."""

    def __init__(self, root: Path, manifest: dict[str, Any], params: IndexParams | None) -> None:
        self.root = root
        self.manifest = manifest
        self.params = params or IndexParams()
        self._lock = threading.RLock()
        self._db = sqlite3.connect(root / "store.sqlite", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self.image_index = VectorIndex(manifest["image_dim"], self.params)
        self.text_index = VectorIndex(manifest["text_dim"], self.params)
        self._load_faiss()

    # -- lifecycle ---------------------------------------------------------------------------------
    @staticmethod
    def exists(root: Path) -> bool:
        return (Path(root) / "manifest.json").is_file() and (Path(root) / "store.sqlite").is_file()

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        image_dim: int,
        text_dim: int,
        image_encoder: str,
        text_encoder: str,
        params: IndexParams | None = None,
    ) -> CaseStore:
        root = Path(root)
        if cls.exists(root):
            raise FileExistsError(f"{root}: an index already exists here")
        root.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format_version": FORMAT_VERSION,
            "image_dim": int(image_dim),
            "text_dim": int(text_dim),
            "image_encoder": image_encoder,
            "text_encoder": text_encoder,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        store = cls(root, manifest, params)  # creates the SQLite schema first ...
        _write_json_atomic(root / "manifest.json", manifest)  # ... so a manifest always has a database
        return store

    @classmethod
    def create_for(
        cls, root: Path, image_encoder: Any, text_encoder: Any, params: IndexParams | None = None
    ) -> CaseStore:
        """A new store sized and labelled for these encoders (anything with `.dim` and `.name`)."""
        return cls.create(
            root,
            image_dim=image_encoder.dim,
            text_dim=text_encoder.dim,
            image_encoder=image_encoder.name,
            text_encoder=text_encoder.name,
            params=params,
        )

    @classmethod
    def open(cls, root: Path, params: IndexParams | None = None) -> CaseStore:
        root = Path(root)
        if not cls.exists(root):
            raise IndexNotFoundError(f"{root}: no index here (manifest.json and store.sqlite expected)")
        try:
            manifest = json.loads((root / "manifest.json").read_text())
        except json.JSONDecodeError as err:
            raise IndexNotFoundError(f"{root / 'manifest.json'}: unreadable ({err})") from err
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{root}: index format {manifest.get('format_version')}, this kgreport reads {FORMAT_VERSION}"
            )
        return cls(root, manifest, params)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> CaseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- generation and FAISS persistence ----------------------------------------------------------
    def generation(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return int(row["value"]) if row else 0

    def _bump_generation(self) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES('generation', '1') "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    def _load_faiss(self) -> None:
        state_file = self.root / "faiss.json"
        generation = self.generation()
        try:
            state = json.loads(state_file.read_text()) if state_file.is_file() else {}
            if state.get("generation") == generation and generation > 0:
                self.image_index = VectorIndex.load(self.root / "image.faiss", self.params)
                self.text_index = VectorIndex.load(self.root / "text.faiss", self.params)
                return
        except (VectorIndexError, json.JSONDecodeError, OSError) as err:
            log.warning("%s: FAISS files unreadable (%s); rebuilding from SQLite", self.root, err)
        if generation > 0:
            if state_file.is_file():
                log.warning("%s: FAISS files lag behind SQLite (crash before flush?); rebuilding", self.root)
            self._rebuild_faiss()

    def _rebuild_faiss(self) -> None:
        self.image_index = VectorIndex(self.manifest["image_dim"], self.params)
        self.text_index = VectorIndex(self.manifest["text_dim"], self.params)
        for table, column, index in (("images", "vector", self.image_index), ("cases", "text_vector", self.text_index)):
            cursor = self._db.execute(f"SELECT id, {column} AS v FROM {table} ORDER BY id")  # noqa: S608 - fixed names
            while rows := cursor.fetchmany(50_000):
                index.add(np.array([r["id"] for r in rows], dtype=np.int64), np.stack([_unblob(r["v"]) for r in rows]))

    def flush(self) -> None:
        """Write both FAISS files atomically, then record which SQLite generation they reflect."""
        with self._lock:
            self.image_index.save(self.root / "image.faiss")
            self.text_index.save(self.root / "text.faiss")
            _write_json_atomic(self.root / "faiss.json", {"generation": self.generation()})

    # -- writes --------------------------------------------------------------------------------------
    def add_cases(
        self, items: Sequence[tuple[Case, Mapping[str, np.ndarray], np.ndarray]], *, replace: bool = False
    ) -> int:
        """Store cases with their image vectors and report vector, all in one transaction."""
        image_dim, text_dim = self.manifest["image_dim"], self.manifest["text_dim"]
        with self._lock:
            new_images: list[tuple[int, np.ndarray]] = []
            new_texts: list[tuple[int, np.ndarray]] = []
            removed_cases: list[int] = []
            removed_images: list[int] = []
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for case, image_vectors, text_vector in items:
                    if np.asarray(text_vector).shape != (text_dim,):
                        raise VectorIndexError(
                            f"case {case.case_id}: report vector of shape {np.shape(text_vector)}, "
                            f"index {self.root.name} expects ({text_dim},)"
                        )
                    existing = self._db.execute("SELECT id FROM cases WHERE case_id=?", (case.case_id,)).fetchone()
                    if existing is not None:
                        if not replace:
                            raise DuplicateCaseError(f"case {case.case_id} is already in index {self.root.name}")
                        removed_cases.append(existing["id"])
                        removed_images += [
                            r["id"]
                            for r in self._db.execute("SELECT id FROM images WHERE case_pk=?", (existing["id"],))
                        ]
                        self._db.execute("DELETE FROM cases WHERE id=?", (existing["id"],))
                    case_pk = self._db.execute(
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
                            _blob(text_vector),
                        ),
                    ).lastrowid
                    assert case_pk is not None
                    new_texts.append((case_pk, np.asarray(text_vector, dtype=np.float32)))
                    for image in case.images:
                        vector = image_vectors.get(image.image_id)
                        if vector is None:
                            continue
                        if np.asarray(vector).shape != (image_dim,):
                            raise VectorIndexError(
                                f"image {image.image_id}: vector of shape {np.shape(vector)}, "
                                f"index {self.root.name} expects ({image_dim},)"
                            )
                        image_pk = self._db.execute(
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
                                _blob(vector),
                            ),
                        ).lastrowid
                        assert image_pk is not None
                        new_images.append((image_pk, np.asarray(vector, dtype=np.float32)))
                self._bump_generation()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self.image_index.remove(np.array(removed_images, dtype=np.int64))
            self.text_index.remove(np.array(removed_cases, dtype=np.int64))
            if new_images:
                self.image_index.add(np.array([i for i, _ in new_images]), np.stack([v for _, v in new_images]))
            if new_texts:
                self.text_index.add(np.array([i for i, _ in new_texts]), np.stack([v for _, v in new_texts]))
            return len(items)

    def delete_case(self, case_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT id FROM cases WHERE case_id=?", (case_id,)).fetchone()
            if row is None:
                return False
            image_ids = [r["id"] for r in self._db.execute("SELECT id FROM images WHERE case_pk=?", (row["id"],))]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM cases WHERE id=?", (row["id"],))
                self._bump_generation()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self.image_index.remove(np.array(image_ids, dtype=np.int64))
            self.text_index.remove(np.array([row["id"]], dtype=np.int64))
            return True

    # -- reads -----------------------------------------------------------------------------------------
    def has_case(self, case_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM cases WHERE case_id=?", (case_id,)).fetchone() is not None

    def case_ids(self) -> set[str]:
        return {r["case_id"] for r in self._db.execute("SELECT case_id FROM cases")}

    def patient_of(self, case_id: str) -> str | None:
        row = self._db.execute("SELECT patient_id FROM cases WHERE case_id=?", (case_id,)).fetchone()
        return row["patient_id"] if row else None

    def case_ids_for_path(self, path: Path) -> set[str]:
        """Cases that store an image at exactly this path (the leakage guard's first check)."""
        rows = self._db.execute(
            "SELECT c.case_id FROM images i JOIN cases c ON c.id = i.case_pk WHERE i.path = ?", (str(path),)
        )
        return {r["case_id"] for r in rows}

    def get_case(self, case_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM cases WHERE case_id=?", (case_id,)).fetchone()
        if row is None:
            return None
        images = self._db.execute(
            "SELECT image_id, path, caption, modality, body_region, plane, metadata_json "
            "FROM images WHERE case_pk=? ORDER BY id",
            (row["id"],),
        ).fetchall()
        return {
            "case_id": row["case_id"],
            "patient_id": row["patient_id"],
            "modality": row["modality"],
            "body_region": row["body_region"],
            "report": json.loads(row["report_json"]),
            "report_text": row["report_text"],
            "metadata": json.loads(row["metadata_json"]),
            "images": [
                {
                    **{k: img[k] for k in ("image_id", "path", "caption", "modality", "body_region", "plane")},
                    "metadata": json.loads(img["metadata_json"]),
                }
                for img in images
            ],
        }

    def info(self) -> dict[str, Any]:
        size = sum(f.stat().st_size for f in self.root.iterdir() if f.is_file())
        return {
            "name": self.root.name,
            "path": str(self.root),
            "cases": self._db.execute("SELECT COUNT(*) FROM cases").fetchone()[0],
            "images": self._db.execute("SELECT COUNT(*) FROM images").fetchone()[0],
            "image_dim": self.manifest["image_dim"],
            "text_dim": self.manifest["text_dim"],
            "image_encoder": self.manifest["image_encoder"],
            "text_encoder": self.manifest["text_encoder"],
            "image_index": self.image_index.kind,
            "text_index": self.text_index.kind,
            "generation": self.generation(),
            "bytes_on_disk": size,
            "created": self.manifest.get("created"),
        }

    # -- search ------------------------------------------------------------------------------------------
    def _where(
        self, filters: Mapping[str, str], exclude_case_ids: Collection[str], exclude_patient_ids: Collection[str]
    ) -> tuple[str, list[Any]]:
        clauses, args = [], []
        for key, value in filters.items():
            if not _FILTER_KEY_RE.match(key):
                raise ValueError(f"invalid filter key {key!r}")
            if key in {"modality", "body_region"}:
                clauses.append(f"lower(COALESCE(i.{key}, c.{key})) = lower(?)")
            elif key in {"patient_id", "case_id"}:
                clauses.append(f"lower(c.{key}) = lower(?)")
            else:
                clauses.append(
                    "lower(COALESCE(json_extract(i.metadata_json, ?), json_extract(c.metadata_json, ?))) = lower(?)"
                )
                args += [f'$."{key}"', f'$."{key}"']
            args.append(str(value))
        if exclude_case_ids:
            clauses.append(f"c.case_id NOT IN ({','.join('?' * len(exclude_case_ids))})")
            args += list(exclude_case_ids)
        if exclude_patient_ids:
            clauses.append(
                f"(c.patient_id IS NULL OR c.patient_id NOT IN ({','.join('?' * len(exclude_patient_ids))}))"
            )
            args += list(exclude_patient_ids)
        return " AND ".join(clauses), args

    def _allowed(
        self,
        column: str,
        filters: Mapping[str, str] | None,
        exclude_case_ids: Collection[str],
        exclude_patient_ids: Collection[str],
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(allowed ids or None for all, excluded ids or None) for `column` ("i.id" or "c.id")."""
        if filters:
            where, args = self._where(filters, exclude_case_ids, exclude_patient_ids)
            rows = self._db.execute(
                f"SELECT DISTINCT {column} AS id FROM images i JOIN cases c ON c.id = i.case_pk WHERE {where}", args
            ).fetchall()  # noqa: S608 - values are parameters
            return np.array([r["id"] for r in rows], dtype=np.int64), None
        if exclude_case_ids or exclude_patient_ids:
            clauses, args = [], []
            if exclude_case_ids:
                clauses.append(f"c.case_id IN ({','.join('?' * len(exclude_case_ids))})")
                args += list(exclude_case_ids)
            if exclude_patient_ids:
                clauses.append(f"c.patient_id IN ({','.join('?' * len(exclude_patient_ids))})")
                args += list(exclude_patient_ids)
            rows = self._db.execute(
                f"SELECT DISTINCT {column} AS id FROM cases c LEFT JOIN images i ON c.id = i.case_pk "
                f"WHERE {' OR '.join(clauses)}",
                args,
            ).fetchall()  # noqa: S608
            return None, np.array([r["id"] for r in rows if r["id"] is not None], dtype=np.int64)
        return None, None

    def _hits(self, sql: str, ids: Sequence[int], scores: Sequence[float]) -> list[Hit]:
        if not ids:
            return []
        rows = {r["pk"]: r for r in self._db.execute(sql.format(qs=",".join("?" * len(ids))), list(ids))}
        return [
            Hit(
                case_id=r["case_id"],
                image_id=r["image_id"] or "",
                score=float(s),
                modality=r["modality"],
                body_region=r["body_region"],
                report=r["report_text"],
                patient_id=r["patient_id"],
                caption=r["caption"] or "",
            )
            for i, s in zip(ids, scores, strict=True)
            if (r := rows.get(i)) is not None
        ]

    _IMAGE_HIT_SQL = (
        "SELECT i.id AS pk, c.case_id, i.image_id, COALESCE(i.modality, c.modality) AS modality, "
        "COALESCE(i.body_region, c.body_region) AS body_region, c.report_text, c.patient_id, i.caption "
        "FROM images i JOIN cases c ON c.id = i.case_pk WHERE i.id IN ({qs})"
    )
    _TEXT_HIT_SQL = (
        "SELECT c.id AS pk, c.case_id, (SELECT image_id FROM images WHERE case_pk = c.id ORDER BY id LIMIT 1)"
        " AS image_id, c.modality, c.body_region, c.report_text, c.patient_id, '' AS caption "
        "FROM cases c WHERE c.id IN ({qs})"
    )

    def _search(
        self,
        index: VectorIndex,
        column: str,
        sql: str,
        queries: np.ndarray,
        k: int,
        filters: Mapping[str, str] | None,
        exclude_case_ids: Collection[str],
        exclude_patient_ids: Collection[str],
    ) -> list[list[Hit]]:
        with self._lock:
            allowed, excluded = self._allowed(column, filters, exclude_case_ids, exclude_patient_ids)
            scores, ids = index.search(queries, k, allowed_ids=allowed, excluded_ids=excluded)
            return [
                self._hits(
                    sql,
                    [int(i) for i in row_ids if i >= 0],
                    [float(s) for s, i in zip(row_s, row_ids, strict=True) if i >= 0],
                )
                for row_s, row_ids in zip(scores, ids, strict=True)
            ]

    def search_images(
        self,
        queries: np.ndarray,
        k: int,
        *,
        filters: Mapping[str, str] | None = None,
        exclude_case_ids: Collection[str] = (),
        exclude_patient_ids: Collection[str] = (),
    ) -> list[list[Hit]]:
        """Top-k stored images per query vector (image-space vectors)."""
        return self._search(
            self.image_index, "i.id", self._IMAGE_HIT_SQL, queries, k, filters, exclude_case_ids, exclude_patient_ids
        )

    def search_texts(
        self,
        queries: np.ndarray,
        k: int,
        *,
        filters: Mapping[str, str] | None = None,
        exclude_case_ids: Collection[str] = (),
        exclude_patient_ids: Collection[str] = (),
    ) -> list[list[Hit]]:
        """Top-k cases per query vector (report-text-space vectors); image_id is the case's first image."""
        return self._search(
            self.text_index, "c.id", self._TEXT_HIT_SQL, queries, k, filters, exclude_case_ids, exclude_patient_ids
        )

    def image_hits_for_cases(self, case_ids: Sequence[str]) -> list[Hit]:
        """Every stored image of these cases, as zero-score hits (candidates for exact rescoring)."""
        if not case_ids:
            return []
        rows = self._db.execute(
            f"SELECT i.id FROM images i JOIN cases c ON c.id = i.case_pk "
            f"WHERE c.case_id IN ({','.join('?' * len(case_ids))})",
            list(case_ids),
        ).fetchall()
        ids = [r["id"] for r in rows]
        return self._hits(self._IMAGE_HIT_SQL, ids, [0.0] * len(ids))

    def image_vectors(self, keys: Sequence[tuple[str, str]]) -> np.ndarray:
        """Stored image vectors for (case_id, image_id) pairs, in order."""
        out = np.zeros((len(keys), self.manifest["image_dim"]), dtype=np.float32)
        for n, (case_id, image_id) in enumerate(keys):
            row = self._db.execute(
                "SELECT i.vector FROM images i JOIN cases c ON c.id = i.case_pk WHERE c.case_id=? AND i.image_id=?",
                (case_id, image_id),
            ).fetchone()
            if row is not None:
                out[n] = _unblob(row["vector"])
        return out

    def case_text_vectors(self, case_ids: Sequence[str]) -> np.ndarray:
        """Stored report vectors for these case ids, in order (zeros for unknown ids)."""
        unique = list(dict.fromkeys(case_ids))
        found = (
            {
                r["case_id"]: _unblob(r["text_vector"])
                for r in self._db.execute(
                    f"SELECT case_id, text_vector FROM cases WHERE case_id IN ({','.join('?' * len(unique))})", unique
                )
            }
            if unique
            else {}
        )
        zero = np.zeros(self.manifest["text_dim"], dtype=np.float32)
        if not case_ids:
            return np.zeros((0, self.manifest["text_dim"]), dtype=np.float32)
        return np.stack([found.get(c, zero) for c in case_ids])
