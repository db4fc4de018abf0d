"""One named index on disk: SQLite (cases, images, their vectors) + two FAISS indexes derived from it.

Layout of `root/`: `store.sqlite` (the source of truth), `image.faiss` (one vector per stored image,
keyed by the image row id), `text.faiss` (one report vector per case, keyed by the case row id) and
`manifest.json` (format version, dimensions, encoder names, creation time, and the SQLite
generation the FAISS files reflect).

Every write is one SQLite transaction that also bumps a `generation` counter in `meta`. `flush()`
writes the FAISS files atomically and then records their generation in the manifest. On `open()`,
FAISS files whose generation differs from SQLite's (a crash between commit and flush), or that are
missing, corrupt or of the wrong size, are rebuilt from the vectors in SQLite: a half-written index
is recovered, never served stale.

Vectors are stored L2-normalised, so what SQLite holds is exactly what FAISS searches (cosine).
Several processes may share a store (service workers, the CLI beside the service); writes are serialised
by the caller's lock across processes. Each write also logs the rows it added and removed, and a handle
that finds the generation moved on (before a search, or at its own next write) applies those changes to
its FAISS copy, or reloads it when the log no longer reaches back that far: never a stale view.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.records import REPORT_SECTIONS, Case, CaseImage, Hit, ReportSections
from retrieval.store_rows import (
    IMAGE_HIT_SQL,
    IN_LIST,
    SCHEMA,
    TEXT_HIT_SQL,
    file_id,
    from_blob,
    json_list,
    to_blob,
    unit_vector,
    write_json_atomic,
)
from retrieval.vector_index import IndexParams, VectorIndex, VectorIndexError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_FILTER_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # metadata keys go into a JSON path: keep them plain
_REBUILD_CHUNK = 20_000  # rows read from SQLite per FAISS add while rebuilding
CHANGE_LOG_GENERATIONS = 1000  # writes whose row changes are kept for other processes to catch up with


class IndexNotFoundError(FileNotFoundError):
    """No index at the given path (or its manifest is unreadable)."""


class IndexUnreadableError(RuntimeError):
    """An index whose files are there but cannot be read: a garbage manifest, a corrupt or emptied
    database. The message names the file; other indexes are not affected."""


class DuplicateCaseError(ValueError):
    """A case id that is already stored (or given twice in one batch)."""


class CaseStore:
    """Cases, images and their vectors; similarity search with metadata filters and exclusions.

    Use `CaseStore.create` / `CaseStore.open`, not the constructor. Safe to share between threads:
    one lock serialises database access and FAISS updates.
    """

    def __init__(self, root: Path, manifest: dict[str, Any], params: IndexParams | None) -> None:
        self.root = root
        self.manifest = manifest
        self.params = params or IndexParams()
        self._lock = threading.Lock()
        self._closed = False
        # Autocommit mode (isolation_level=None): transactions are the explicit BEGIN/COMMIT below.
        self._db = sqlite3.connect(root / "store.sqlite", check_same_thread=False, isolation_level=None)
        self.file_id = file_id(root / "store.sqlite")
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self.image_index = VectorIndex(manifest["image_dim"], self.params)
        self.text_index = VectorIndex(manifest["text_dim"], self.params)
        self._indexed_generation = 0  # the SQLite generation the in-memory FAISS indexes reflect
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
        image_encoder_fingerprint: str | None = None,
    ) -> CaseStore:
        """A new, empty store at `root`; FileExistsError if one is already there."""
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
            **({"image_encoder_fingerprint": image_encoder_fingerprint} if image_encoder_fingerprint else {}),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "faiss_generation": 0,
        }
        store = cls(root, manifest, params)  # creates the SQLite schema first ...
        write_json_atomic(root / "manifest.json", manifest)  # ... so a manifest always has a database
        return store

    @classmethod
    def create_for(
        cls, root: Path, image_encoder: Any, text_encoder: Any, params: IndexParams | None = None
    ) -> CaseStore:
        """A new store sized and labelled for these encoders (anything with `.dim` and `.name`, and the
        image encoder's weights `.fingerprint` where it has one)."""
        return cls.create(
            root,
            image_dim=image_encoder.dim,
            text_dim=text_encoder.dim,
            image_encoder=image_encoder.name,
            text_encoder=text_encoder.name,
            params=params,
            image_encoder_fingerprint=getattr(image_encoder, "fingerprint", None),
        )

    @classmethod
    def open(cls, root: Path, params: IndexParams | None = None) -> CaseStore:
        """The store at `root`; IndexNotFoundError naming the path if there is none."""
        root = Path(root)
        if not cls.exists(root):
            raise IndexNotFoundError(f"{root}: no index here (manifest.json and store.sqlite expected)")
        manifest_path = root / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise IndexUnreadableError(f"{manifest_path}: not a readable manifest ({err})") from err
        if not isinstance(manifest, dict):
            raise IndexUnreadableError(f"{manifest_path}: not a readable manifest (a JSON object is expected)")
        if manifest.get("format_version") != FORMAT_VERSION:
            found = manifest.get("format_version")
            raise ValueError(f"{manifest_path}: index format {found}, this kgreport reads {FORMAT_VERSION}")
        missing = {"image_dim", "text_dim", "image_encoder", "text_encoder"} - manifest.keys()
        if missing:
            raise ValueError(f"{manifest_path}: missing {', '.join(sorted(missing))}")
        try:
            return cls(root, manifest, params)
        except sqlite3.DatabaseError as err:
            raise IndexUnreadableError(f"{root / 'store.sqlite'}: not a readable SQLite database ({err})") from err

    def replaced_on_disk(self) -> bool:
        """Whether another store now sits at this root (`kgreport index rebuild` swapped one in) or none:
        a handle that is still open reads the old, unlinked files, so its owner must open the root anew."""
        try:
            return file_id(self.root / "store.sqlite") != self.file_id
        except FileNotFoundError:
            return True

    def close(self) -> None:
        """Close the database. Does not flush: call `flush()` first to save the FAISS files."""
        with self._lock:
            if not self._closed:
                self._db.close()
                self._closed = True

    def __enter__(self) -> CaseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- generation and FAISS persistence ----------------------------------------------------------
    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A read transaction: every SELECT inside sees one consistent state (WAL snapshot)."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[int]:
        """A write transaction that bumps the generation; yields the generation it started from."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            before = self._generation()
            yield before
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES('generation', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(before + 1),),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _generation(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return int(row["value"]) if row else 0

    def generation(self) -> int:
        """How many write transactions the store has committed."""
        with self._lock:
            return self._generation()

    def _count(self, table: str) -> int:
        return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # fixed table names

    def _load_faiss(self) -> None:
        """Load the FAISS files if they match SQLite; otherwise rebuild them from SQLite."""
        with self._snapshot():
            generation = self._generation()
            n_images, n_cases = self._count("images"), self._count("cases")
        if generation == 0:
            if self.manifest.get("faiss_generation"):  # flushed once, so SQLite held cases then
                self._db.close()
                raise IndexUnreadableError(
                    f"{self.root / 'store.sqlite'}: no cases, but the index was saved with some (generation "
                    f"{self.manifest['faiss_generation']}): the database was emptied or replaced; restore it or "
                    "rebuild the index"
                )
            return  # nothing was ever written: empty indexes
        recorded = self.manifest.get("faiss_generation")
        problem = None
        if recorded != generation:
            problem = f"FAISS files reflect generation {recorded}, SQLite is at {generation} (crash before flush?)"
        else:
            try:
                image = VectorIndex.load(self.root / "image.faiss", self.params)
                text = VectorIndex.load(self.root / "text.faiss", self.params)
                if (image.dim, text.dim) != (self.manifest["image_dim"], self.manifest["text_dim"]):
                    problem = f"FAISS dimensions {image.dim}/{text.dim} differ from the manifest's"
                elif (len(image), len(text)) != (n_images, n_cases):
                    problem = f"FAISS holds {len(image)}/{len(text)} vectors, SQLite {n_images}/{n_cases}"
                else:
                    self.image_index, self.text_index = image, text
                    self._indexed_generation = generation
            except VectorIndexError as err:
                problem = str(err)
        if problem:
            log.warning("%s: %s; rebuilding the FAISS indexes from store.sqlite", self.root, problem)
            self._rebuild_faiss()

    def _log_changes(
        self, generation: int, removed: tuple[list[int], list[int]], added: tuple[list[int], list[int]]
    ) -> None:
        """Record a write's row changes in its own transaction (see `_catch_up`); forget old ones."""
        rows = [
            (generation, space, row_id, flag)
            for space, gone, new in (("image", removed[0], added[0]), ("text", removed[1], added[1]))
            for row_ids, flag in ((gone, 0), (new, 1))
            for row_id in row_ids
        ]
        self._db.executemany("INSERT INTO changes(generation, space, row_id, added) VALUES (?,?,?,?)", rows)
        self._db.execute("DELETE FROM changes WHERE generation <= ?", (generation - CHANGE_LOG_GENERATIONS,))

    def _catch_up(self) -> None:
        """Bring the in-memory FAISS indexes up to SQLite if another process (a second service worker, the
        CLI) has written since: apply the logged row changes, or, when they are no longer all kept, load its
        flushed files or rebuild. Called under the lock before every search; when nothing changed it costs
        one indexed read."""
        if self._generation() == self._indexed_generation:
            return
        try:
            with self._snapshot():
                applied = self._apply_logged_changes()
        except VectorIndexError as err:  # the log disagrees with our copy: start again from SQLite
            log.warning("%s: %s; rebuilding the FAISS indexes from store.sqlite", self.root, err)
            self._rebuild_faiss()
            return
        if applied:
            return
        try:
            recorded = json.loads((self.root / "manifest.json").read_text(encoding="utf-8")).get("faiss_generation")
        except (OSError, ValueError, AttributeError):
            recorded = None  # mid-replace or unreadable: rebuild from SQLite
        self.manifest["faiss_generation"] = recorded
        log.info("%s: another process wrote to this index; reloading its FAISS indexes", self.root)
        self._load_faiss()

    def _apply_logged_changes(self) -> bool:
        """Apply the change log since our generation (inside a read snapshot); False if part of it is gone."""
        generation = self._generation()
        rows = self._db.execute(
            "SELECT generation, space, row_id, added FROM changes WHERE generation > ? AND generation <= ?",
            (self._indexed_generation, generation),
        ).fetchall()
        if {r["generation"] for r in rows} != set(range(self._indexed_generation + 1, generation + 1)):
            return False
        spaces = (("image", self.image_index, "images", "vector"), ("text", self.text_index, "cases", "text_vector"))
        for space, index, table, column in spaces:
            index.remove(
                np.array([r["row_id"] for r in rows if r["space"] == space and not r["added"]], dtype=np.int64)
            )
            new = [r["row_id"] for r in rows if r["space"] == space and r["added"]]
            stored = self._db.execute(  # rows added and deleted again within the window are gone: skipped
                f"SELECT id, {column} FROM {table} WHERE id IN {IN_LIST} ORDER BY id", (json_list(new),)
            ).fetchall()
            if stored:
                index.add(np.array([r[0] for r in stored], dtype=np.int64), np.stack([from_blob(r[1]) for r in stored]))
        self._indexed_generation = generation
        return True

    def _rebuild_faiss(self) -> None:
        """Fresh FAISS indexes from the vectors in SQLite (one consistent snapshot)."""
        with self._snapshot():
            generation = self._generation()
            image = self._index_from_table("images", "vector", self.manifest["image_dim"])
            text = self._index_from_table("cases", "text_vector", self.manifest["text_dim"])
        self.image_index, self.text_index = image, text
        self._indexed_generation = generation

    def _index_from_table(self, table: str, column: str, dim: int) -> VectorIndex:
        index = VectorIndex(dim, self.params)
        ids = np.array([r[0] for r in self._db.execute(f"SELECT id FROM {table} ORDER BY id")], dtype=np.int64)
        if len(ids) >= self.params.exact_threshold:
            # Train IVF once on a sample of everything, rather than switching structure mid-stream.
            rng = np.random.default_rng(0)
            picked = np.sort(rng.choice(ids, min(len(ids), self.params.train_sample), replace=False))
            index.train(self._vectors_for(table, column, picked), expected_size=len(ids))
        cursor = self._db.execute(f"SELECT id, {column} FROM {table} ORDER BY id")
        while rows := cursor.fetchmany(_REBUILD_CHUNK):
            index.add(np.array([r[0] for r in rows], dtype=np.int64), np.stack([from_blob(r[1]) for r in rows]))
        return index

    def _vectors_for(self, table: str, column: str, ids: np.ndarray) -> np.ndarray:
        parts = []
        for start in range(0, len(ids), _REBUILD_CHUNK):
            chunk = [int(i) for i in ids[start : start + _REBUILD_CHUNK]]
            rows = self._db.execute(
                f"SELECT {column} FROM {table} WHERE id IN {IN_LIST} ORDER BY id", (json.dumps(chunk),)
            )
            parts += [from_blob(r[0]) for r in rows]
        return np.stack(parts)

    def flush(self) -> None:
        """Write both FAISS files atomically, then record which SQLite generation they reflect."""
        with self._lock:
            self.image_index.save(self.root / "image.faiss")
            self.text_index.save(self.root / "text.faiss")
            # Recorded last: a crash before this line leaves the old generation, so open() rebuilds.
            self.manifest["faiss_generation"] = self._indexed_generation
            write_json_atomic(self.root / "manifest.json", self.manifest)

    def _sync_faiss(
        self,
        before: int,
        removed: tuple[list[int], list[int]],
        added: tuple[list[tuple[int, np.ndarray]], list[tuple[int, np.ndarray]]],
    ) -> None:
        """Apply a just-committed write to the in-memory indexes (catching up first if they were stale)."""
        if before != self._indexed_generation:  # another process wrote since our last look: its changes too
            self._catch_up()
            return
        for index, gone, new in zip((self.image_index, self.text_index), removed, added, strict=True):
            index.remove(np.array(gone, dtype=np.int64))
            if new:
                index.add(np.array([pk for pk, _ in new], dtype=np.int64), np.stack([v for _, v in new]))
        self._indexed_generation = before + 1

    # -- writes --------------------------------------------------------------------------------------
    def _prepared(
        self, items: Sequence[tuple[Case, Mapping[str, np.ndarray], np.ndarray]]
    ) -> list[tuple[Case, list[tuple[Any, np.ndarray]], np.ndarray]]:
        """Validate a batch before touching the database: dimensions, finiteness, duplicate ids."""
        image_dim, text_dim = self.manifest["image_dim"], self.manifest["text_dim"]
        seen: set[str] = set()
        out = []
        for case, image_vectors, text_vector in items:
            if case.case_id in seen:
                raise DuplicateCaseError(f"case {case.case_id} appears twice in one batch")
            seen.add(case.case_id)
            image_ids = [image.image_id for image in case.images]
            if len(set(image_ids)) != len(image_ids):
                raise ValueError(f"case {case.case_id}: duplicate image ids")
            images = [
                (image, unit_vector(image_vectors[image.image_id], image_dim, f"image {image.image_id}"))
                for image in case.images
                if image_vectors.get(image.image_id) is not None  # images without a vector are not stored
            ]
            out.append((case, images, unit_vector(text_vector, text_dim, f"case {case.case_id}: report")))
        return out

    def add_cases(
        self, items: Sequence[tuple[Case, Mapping[str, np.ndarray], np.ndarray]], *, replace: bool = False
    ) -> int:
        """Store (case, {image_id: image vector}, report vector) items in one transaction; returns how many.

        An existing case_id raises DuplicateCaseError (and nothing of the batch is stored) unless
        `replace`, which swaps the old case for the new one.
        """
        prepared = self._prepared(items)
        if not prepared:
            return 0
        removed: tuple[list[int], list[int]] = ([], [])
        added: tuple[list[tuple[int, np.ndarray]], list[tuple[int, np.ndarray]]] = ([], [])
        with self._lock:  # held through the FAISS update so no other write slips in between
            with self._write() as before:
                for case, images, text_vector in prepared:
                    old = self._db.execute("SELECT id FROM cases WHERE case_id=?", (case.case_id,)).fetchone()
                    if old is not None:
                        if not replace:
                            raise DuplicateCaseError(f"case {case.case_id} is already in index {self.root.name}")
                        removed[0].extend(self._image_pks(old["id"]))
                        removed[1].append(old["id"])
                        self._db.execute("DELETE FROM cases WHERE id=?", (old["id"],))  # images cascade
                    case_pk = self._insert_case(case, text_vector)
                    added[1].append((case_pk, text_vector))
                    for image, vector in images:
                        added[0].append((self._insert_image(case_pk, case, image, vector), vector))
                self._log_changes(before + 1, removed, ([pk for pk, _ in added[0]], [pk for pk, _ in added[1]]))
            self._sync_faiss(before, removed, added)
        return len(prepared)

    def _insert_case(self, case: Case, text_vector: np.ndarray) -> int:
        cursor = self._db.execute(
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

    def _insert_image(self, case_pk: int, case: Case, image: Any, vector: np.ndarray) -> int:
        cursor = self._db.execute(
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

    def _image_pks(self, case_pk: int) -> list[int]:
        return [r["id"] for r in self._db.execute("SELECT id FROM images WHERE case_pk=?", (case_pk,))]

    def delete_case(self, case_id: str) -> bool:
        """Remove a case and its images from SQLite and both FAISS indexes; False if it was not stored."""
        with self._lock:
            if not self._has_case(case_id):
                return False
            with self._write() as before:
                row = self._db.execute("SELECT id FROM cases WHERE case_id=?", (case_id,)).fetchone()
                image_pks = self._image_pks(row["id"])
                self._db.execute("DELETE FROM cases WHERE id=?", (row["id"],))
                self._log_changes(before + 1, (image_pks, [row["id"]]), ([], []))
            self._sync_faiss(before, (image_pks, [row["id"]]), ([], []))
            return True

    # -- reads -----------------------------------------------------------------------------------------
    def _has_case(self, case_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM cases WHERE case_id=?", (case_id,)).fetchone() is not None

    def has_case(self, case_id: str) -> bool:
        with self._lock:
            return self._has_case(case_id)

    def case_ids(self) -> set[str]:
        with self._lock:
            return {r["case_id"] for r in self._db.execute("SELECT case_id FROM cases")}

    def patient_of(self, case_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT patient_id FROM cases WHERE case_id=?", (case_id,)).fetchone()
        return row["patient_id"] if row else None

    def case_ids_for_path(self, path: Path) -> set[str]:
        """Cases that store an image at exactly this path (the leakage guard's first check)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT c.case_id FROM images i JOIN cases c ON c.id = i.case_pk WHERE i.path = ?",
                (str(path),),
            ).fetchall()
        return {r["case_id"] for r in rows}

    def get_case(self, case_id: str) -> dict[str, Any] | None:
        """The stored case: its fields, report sections, metadata and images (without vectors)."""
        with self._lock:
            row = self._db.execute("SELECT * FROM cases WHERE case_id=?", (case_id,)).fetchone()
            if row is None:
                return None
            images = self._db.execute(
                "SELECT image_id, path, caption, modality, body_region, plane, metadata_json "
                "FROM images WHERE case_pk=? ORDER BY id",
                (row["id"],),
            ).fetchall()
        fields = ("image_id", "path", "caption", "modality", "body_region", "plane")
        return {
            "case_id": row["case_id"],
            "patient_id": row["patient_id"],
            "modality": row["modality"],
            "body_region": row["body_region"],
            "report": json.loads(row["report_json"]),
            "report_text": row["report_text"],
            "metadata": json.loads(row["metadata_json"]),
            "images": [{**{k: img[k] for k in fields}, "metadata": json.loads(img["metadata_json"])} for img in images],
        }

    def stored_cases(self) -> Iterator[Case]:
        """Every stored case as the `Case` it was ingested from (images by their stored paths), in
        insertion order: what re-embedding the index with another encoder needs."""
        for case_id in self.case_ids_in_order():
            stored = self.get_case(case_id)
            if stored is None:  # deleted meanwhile
                continue
            yield Case(
                case_id=stored["case_id"],
                patient_id=stored["patient_id"],
                modality=stored["modality"],
                body_region=stored["body_region"],
                report=ReportSections(**{k: v for k, v in stored["report"].items() if k in REPORT_SECTIONS}),
                metadata=stored["metadata"],
                images=tuple(
                    CaseImage(
                        image_id=img["image_id"],
                        path=Path(img["path"]),
                        caption=img["caption"] or "",
                        modality=img["modality"],
                        body_region=img["body_region"],
                        plane=img["plane"],
                        metadata=img["metadata"],
                    )
                    for img in stored["images"]
                ),
            )

    def case_ids_in_order(self) -> list[str]:
        with self._lock:
            return [r["case_id"] for r in self._db.execute("SELECT case_id FROM cases ORDER BY id")]

    def image_rows_for(self, ids: Iterable[int]) -> list[dict[str, Any]]:
        """Stored image rows for these FAISS image ids, in the given order (unknown ids are skipped)."""
        wanted = [int(i) for i in ids]
        if not wanted:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT i.id, c.case_id, c.patient_id, i.image_id, i.path, i.caption,"
                " COALESCE(i.modality, c.modality) AS modality,"
                " COALESCE(i.body_region, c.body_region) AS body_region, i.plane, i.metadata_json"
                f" FROM images i JOIN cases c ON c.id = i.case_pk WHERE i.id IN {IN_LIST}",
                (json.dumps(wanted),),
            ).fetchall()
        by_id = {r["id"]: {**dict(r), "metadata": json.loads(r["metadata_json"])} for r in rows}
        for row in by_id.values():
            del row["metadata_json"]
        return [by_id[i] for i in wanted if i in by_id]

    def info(self) -> dict[str, Any]:
        """Counts, dimensions, encoders, index kinds, sizes on disk and generations."""
        with self._lock:
            cases, images, generation = self._count("cases"), self._count("images"), self._generation()
        files = {f.name: f.stat().st_size for f in sorted(self.root.iterdir()) if f.is_file()}
        return {
            "name": self.root.name,
            "path": str(self.root),
            "cases": cases,
            "images": images,
            "image_dim": self.manifest["image_dim"],
            "text_dim": self.manifest["text_dim"],
            "image_encoder": self.manifest["image_encoder"],
            "image_encoder_fingerprint": self.manifest.get("image_encoder_fingerprint"),
            "text_encoder": self.manifest["text_encoder"],
            "image_index": self.image_index.kind,
            "text_index": self.text_index.kind,
            "generation": generation,
            "flushed_generation": self.manifest.get("faiss_generation"),
            "bytes_on_disk": sum(files.values()),
            "files": files,
            "memory_bytes": self.image_index.memory_bytes() + self.text_index.memory_bytes(),
            "created": self.manifest.get("created"),
        }

    # -- search ------------------------------------------------------------------------------------------
    @staticmethod
    def _filter_sql(space: str, filters: Mapping[str, str | None]) -> tuple[list[str], list[Any], bool]:
        """WHERE clauses for case-insensitive equality filters, their arguments, whether they read `cases c`.

        Image search: an image's own modality/body region (it stores its case's when it has none) and
        metadata (its own value, else its case's). Text search: the case matches if its own value or
        any of its images' values does.
        """
        clauses: list[str] = []
        args: list[Any] = []
        needs_cases = False
        for key, value in filters.items():
            if value is None:
                continue  # no constraint
            if not _FILTER_KEY_RE.match(key):
                raise ValueError(f"invalid filter key {key!r}")
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

    def _id_sets(
        self,
        space: str,
        filters: Mapping[str, str | None] | None,
        exclude_case_ids: Collection[str],
        exclude_patient_ids: Collection[str],
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(allowed FAISS ids or None for all, excluded FAISS ids or None) of one search space."""
        clauses, args, needs_cases = self._filter_sql(space, filters or {})
        exclusion, exclusion_args = [], []
        if exclude_case_ids:
            exclusion.append(f"c.case_id IN {IN_LIST}")
            exclusion_args.append(json_list(exclude_case_ids))
        if exclude_patient_ids:
            exclusion.append(f"c.patient_id IN {IN_LIST}")
            exclusion_args.append(json_list(exclude_patient_ids))
        if space == "text":
            column, source = "c.id", "cases c"
        else:  # skip the join when no clause reads the case row (it would load each case's vector page)
            column = "i.id"
            source = "images i JOIN cases c ON c.id = i.case_pk" if needs_cases or exclusion else "images i"
        if clauses:  # filters: one allowed set, exclusions folded in
            if exclusion:
                clauses.append(f"NOT ({' OR '.join(exclusion)})")
            sql = f"SELECT {column} FROM {source} WHERE {' AND '.join(clauses)}"
            return np.array([r[0] for r in self._db.execute(sql, args + exclusion_args)], dtype=np.int64), None
        if exclusion:
            sql = f"SELECT {column} FROM {source} WHERE {' OR '.join(exclusion)}"
            return None, np.array([r[0] for r in self._db.execute(sql, exclusion_args)], dtype=np.int64)
        return None, None

    def _hits(self, sql: str, ids: Sequence[int], scores: Sequence[float]) -> list[Hit]:
        return list(self._hits_by_row(sql, ids, scores).values())

    def _hits_by_row(self, sql: str, ids: Sequence[int], scores: Sequence[float]) -> dict[int, Hit]:
        """{row id: hit} in the order of `ids`; rows that no longer exist are left out."""
        if not ids:
            return {}
        rows = {r["pk"]: r for r in self._db.execute(sql, (json.dumps([int(i) for i in ids]),))}
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

    def search_ids(
        self,
        space: str,
        queries: np.ndarray,
        k: int,
        *,
        filters: Mapping[str, str | None] | None = None,
        exclude_case_ids: Collection[str] = (),
        exclude_patient_ids: Collection[str] = (),
    ) -> list[tuple[list[int], list[float]]]:
        """Top-k (row ids, scores) per query in `space` ("image": image rows, "text": case rows), best
        first, without reading the rows: the searcher rescores candidates and reads only the few it keeps."""
        with self._lock:
            self._catch_up()
            index = self.image_index if space == "image" else self.text_index
            allowed, excluded = self._id_sets(space, filters, exclude_case_ids, exclude_patient_ids)
            scores, ids = index.search(queries, k, allowed_ids=allowed, excluded_ids=excluded)
        found = ids >= 0
        return [(i[m].tolist(), s[m].tolist()) for s, i, m in zip(scores, ids, found, strict=True)]

    def _search(
        self,
        space: str,
        queries: np.ndarray,
        k: int,
        filters: Mapping[str, str | None] | None,
        exclude_case_ids: Collection[str],
        exclude_patient_ids: Collection[str],
    ) -> list[list[Hit]]:
        found = self.search_ids(
            space,
            queries,
            k,
            filters=filters,
            exclude_case_ids=exclude_case_ids,
            exclude_patient_ids=exclude_patient_ids,
        )
        sql = IMAGE_HIT_SQL if space == "image" else TEXT_HIT_SQL
        with self._lock:
            return [self._hits(sql, ids, scores) for ids, scores in found]

    def search_images(
        self,
        queries: np.ndarray,
        k: int,
        *,
        filters: Mapping[str, str | None] | None = None,
        exclude_case_ids: Collection[str] = (),
        exclude_patient_ids: Collection[str] = (),
    ) -> list[list[Hit]]:
        """Top-k stored images per query vector (image-space vectors), best first.

        `filters`: case-insensitive equality on modality, body_region, patient_id, case_id or a
        metadata key, combined with AND. Excluded cases and patients never appear (leakage guard).
        """
        return self._search("image", queries, k, filters, exclude_case_ids, exclude_patient_ids)

    def search_texts(
        self,
        queries: np.ndarray,
        k: int,
        *,
        filters: Mapping[str, str | None] | None = None,
        exclude_case_ids: Collection[str] = (),
        exclude_patient_ids: Collection[str] = (),
    ) -> list[list[Hit]]:
        """Top-k cases per query vector (report-text-space vectors); image_id is the case's first image."""
        return self._search("text", queries, k, filters, exclude_case_ids, exclude_patient_ids)

    # -- stored vectors (for exact rescoring) ------------------------------------------------------------
    def image_ids_of_cases(self, case_row_ids: Sequence[int]) -> list[int]:
        """The image row ids of these case rows (text-space ids), in row order."""
        return self._image_ids_of(IN_LIST, case_row_ids)

    def sibling_image_ids(self, image_ids: Sequence[int]) -> list[int]:
        """Every image row id of the cases that own these image rows (them included), in row order."""
        return self._image_ids_of(f"(SELECT case_pk FROM images WHERE id IN {IN_LIST})", image_ids)

    def _image_ids_of(self, case_pks: str, ids: Sequence[int]) -> list[int]:
        """Image row ids whose case row is in `case_pks` (SQL over one JSON-list parameter: `ids`)."""
        if not ids:
            return []
        with self._lock:
            rows = self._db.execute(
                f"SELECT id FROM images WHERE case_pk IN {case_pks} ORDER BY id", (json_list(ids),)
            ).fetchall()
        return [r[0] for r in rows]

    def rescoring_rows(
        self, image_ids: Sequence[int], *, text: bool
    ) -> tuple[list[str], np.ndarray, np.ndarray | None]:
        """For image row ids: their case ids, stored image vectors and (with `text`) their cases' report
        vectors, in order, from one query. Unknown ids get an empty case id and zero vectors."""
        case_ids = [""] * len(image_ids)
        images = np.zeros((len(image_ids), self.manifest["image_dim"]), dtype=np.float32)
        texts = np.zeros((len(image_ids), self.manifest["text_dim"]), dtype=np.float32) if text else None
        if not image_ids:
            return case_ids, images, texts
        text_column = ", c.text_vector" if text else ""
        with self._lock:
            rows = self._db.execute(
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

    def image_hits(self, image_ids: Sequence[int], scores: Sequence[float]) -> dict[int, Hit]:
        """{image row id: hit} with the given scores, in order (rows that no longer exist are left out)."""
        with self._lock:
            return self._hits_by_row(IMAGE_HIT_SQL, image_ids, scores)

    def case_text_vectors(self, case_ids: Sequence[str]) -> np.ndarray:
        """Stored (unit) report vectors for these case ids, in order; zeros for unknown ids."""
        out = np.zeros((len(case_ids), self.manifest["text_dim"]), dtype=np.float32)
        if not case_ids:
            return out
        with self._lock:
            found = {
                r["case_id"]: from_blob(r["text_vector"])
                for r in self._db.execute(
                    f"SELECT case_id, text_vector FROM cases WHERE case_id IN {IN_LIST}",
                    (json_list(case_ids),),
                )
            }
        for n, case_id in enumerate(case_ids):
            if case_id in found:
                out[n] = found[case_id]
        return out
