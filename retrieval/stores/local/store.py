"""One named index on disk: SQLite (cases, images, their vectors) + two FAISS indexes derived from it.

Layout of `root/`: `store.sqlite` (the source of truth), `image.faiss` (one vector per stored image,
keyed by the image row id), `text.faiss` (one report vector per case, keyed by the case row id) and
`manifest.json` (format version, dimensions, encoder names, creation time, and the SQLite
generation the FAISS files reflect).

`CaseStore` is the one public class; it holds the lock and composes three parts, one per seam:

- `rows_db.CaseRows`: the SQLite connection, its transactions (each write bumps a `generation`
  counter) and the case and image rows;
- `faiss_mirror.FaissMirror`: the FAISS indexes, kept equal to SQLite through a change log that other
  processes catch up with, saved atomically by `flush()` and rebuilt from SQLite when they are stale,
  missing or corrupt (a half-written index is recovered, never served stale);
- `queries.StoreQueries`: metadata filters and exclusions as FAISS id sets, hits read back for
  the ids FAISS found, and stored vectors for exact rescoring.

Vectors are stored L2-normalised, so what SQLite holds is exactly what FAISS searches (cosine).
A case may be image-only (a study without a report): it is stored with an empty report and a zero report
vector, found by image search like any other, and never by text search (left out by id, not by score).
Several processes may share a store (service workers, the CLI beside the service); writes are serialised
across processes by the index's writer lock (`retrieval.stores.local.write_lock`), which the caller takes.
`retrieval.index_check` checks a store's files without opening it, and repairs what can be repaired.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np

from kgreport.retrieval.config import IndexParams
from kgreport.retrieval.manifest import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    MANIFEST_KEYS,
    IndexExistsError,
    IndexManifest,
    IndexNotFoundError,
    IndexUnreadableError,
)
from kgreport.retrieval.records import Case, Hit, ImageRow, IndexInfo, StoredCase
from kgreport.retrieval.stores.interface import EncoderLabel
from kgreport.retrieval.stores.local.faiss_mirror import CHANGE_LOG_GENERATIONS, FaissMirror
from kgreport.retrieval.stores.local.queries import StoreQueries
from kgreport.retrieval.stores.local.rows import IMAGE_HIT_SQL, IN_LIST, TEXT_HIT_SQL, file_id, sqlite_file_problem
from kgreport.retrieval.stores.local.rows_db import CaseRows, DuplicateCaseError, prepare_batch
from kgreport.retrieval.stores.scope import EVERY_CASE, SearchScope
from kgreport.retrieval.vector_index import VectorIndex

__all__ = [
    "CHANGE_LOG_GENERATIONS",
    "FORMAT_VERSION",
    "MANIFEST_KEYS",
    "CaseStore",
    "DuplicateCaseError",
    "IndexNotFoundError",
    "IndexUnreadableError",
    "read_manifest",
]


def read_manifest(path: Path) -> IndexManifest:
    """The manifest at `path`, checked (`IndexManifest.load`)."""
    return IndexManifest.load(path)


class CaseStore:
    """Cases, images and their vectors; similarity search with metadata filters and exclusions.

    Use `CaseStore.create` / `CaseStore.open`, not the constructor. Safe to share between threads:
    one lock serialises database access and FAISS updates.
    """

    def __init__(self, root: Path, manifest: IndexManifest, params: IndexParams | None) -> None:
        self.root = root
        self.manifest = manifest
        self.params = params or IndexParams()
        self._lock = threading.Lock()
        self._closed = False
        self.rows = CaseRows(root / "store.sqlite")
        try:
            self.file_id = file_id(root / "store.sqlite")
            self._queries = StoreQueries(self.rows.db, manifest.image_dim, manifest.text_dim)
            self._faiss = FaissMirror(self.rows, root, manifest, self.params)
            self._refuse_emptied_database()
            self._faiss.load()
        except BaseException:
            self.rows.close()
            raise

    def _refuse_emptied_database(self) -> None:
        """IndexUnreadableError if SQLite holds nothing although FAISS files were once saved from it."""
        if self.rows.generation() == 0 and self.manifest.faiss_generation:
            raise IndexUnreadableError(
                f"{self.root / 'store.sqlite'}: no cases, but the index was saved with some (generation "
                f"{self.manifest.faiss_generation}): the database was emptied or replaced; restore it or "
                "rebuild the index"
            )

    @property
    def location(self) -> str:
        """Where the index lives, for messages."""
        return str(self.root)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def image_index(self) -> VectorIndex:
        """The FAISS index of image vectors (ids: image row ids)."""
        return self._faiss.image_index

    @property
    def text_index(self) -> VectorIndex:
        """The FAISS index of report vectors (ids: case row ids)."""
        return self._faiss.text_index

    # -- lifecycle ---------------------------------------------------------------------------------------------
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
            raise IndexExistsError(f"{root}: an index already exists here")
        root.mkdir(parents=True, exist_ok=True)
        made = IndexManifest.new(
            image_dim=image_dim,
            text_dim=text_dim,
            image_encoder=image_encoder,
            text_encoder=text_encoder,
            image_encoder_fingerprint=image_encoder_fingerprint,
        )
        manifest = replace(made, faiss_generation=0)
        store = cls(root, manifest, params)  # creates the SQLite schema first ...
        manifest.save(root / MANIFEST_FILE)  # ... so a manifest always has a database
        return store

    @classmethod
    def create_for(
        cls, root: Path, image_encoder: EncoderLabel, text_encoder: EncoderLabel, params: IndexParams | None = None
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
        """The store at `root`; IndexNotFoundError naming the path if there is none, IndexUnreadableError
        naming the file if its manifest or database cannot be read (a zero-length or foreign
        `store.sqlite` is refused before SQLite sees it, so nothing is written into it)."""
        root = Path(root)
        if not cls.exists(root):
            raise IndexNotFoundError(f"{root}: no index here (manifest.json and store.sqlite expected)")
        manifest = read_manifest(root / "manifest.json")
        database = root / "store.sqlite"
        if problem := sqlite_file_problem(database):
            raise IndexUnreadableError(f"{database}: not a readable SQLite database ({problem})")
        try:
            return cls(root, manifest, params)
        except sqlite3.DatabaseError as err:
            raise IndexUnreadableError(f"{database}: not a readable SQLite database ({err})") from err

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
                self.rows.close()
                self._closed = True

    def read_point(self) -> AbstractContextManager[None]:
        """Nothing to pin: reads of the local files always see every committed write."""
        return nullcontext()

    def __enter__(self) -> CaseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- generation and FAISS persistence ------------------------------------------------------------------
    def generation(self) -> int:
        """How many write transactions the store has committed."""
        with self._lock:
            return self.rows.generation()

    def flush(self) -> None:
        """Write both FAISS files atomically, then record which SQLite generation they reflect."""
        with self._lock:
            self._faiss.save()

    def rebuild_faiss(self) -> None:
        """Rebuild both FAISS indexes from the vectors in SQLite, whatever the files held (`flush()` then
        writes them): what `index_repair.repair_index` does to FAISS files that disagree with SQLite."""
        with self._lock:
            self._faiss.rebuild()

    # -- writes ------------------------------------------------------------------------------------------------
    def add_cases(
        self, items: Sequence[tuple[Case, Mapping[str, np.ndarray], np.ndarray]], *, replace: bool = False
    ) -> int:
        """Store (case, {image_id: image vector}, report vector) items in one transaction; returns how many.

        An existing case_id raises DuplicateCaseError (and nothing of the batch is stored) unless
        `replace`, which swaps the old case for the new one.
        """
        prepared = prepare_batch(items, self.manifest.image_dim, self.manifest.text_dim)
        if not prepared:
            return 0
        with self._lock:  # held through the FAISS update so no other write slips in between
            with self.rows.write() as before:
                removed, added = self.rows.insert(prepared, replace=replace, index_name=self.root.name)
                self._faiss.log_changes(before + 1, removed, ([pk for pk, _ in added[0]], [pk for pk, _ in added[1]]))
            self._faiss.apply_write(before, removed, added)
        return len(prepared)

    def delete_case(self, case_id: str) -> bool:
        """Remove a case and its images from SQLite and both FAISS indexes; False if it was not stored."""
        with self._lock:
            if not self.rows.has_case(case_id):
                return False
            with self.rows.write() as before:
                removed = self.rows.delete(case_id)
                assert removed is not None  # checked above, under the same lock
                self._faiss.log_changes(before + 1, removed, ([], []))
            self._faiss.apply_write(before, removed, ([], []))
            return True

    # -- reads -------------------------------------------------------------------------------------------------
    def has_case(self, case_id: str) -> bool:
        with self._lock:
            return self.rows.has_case(case_id)

    def case_ids(self) -> set[str]:
        with self._lock:
            return self.rows.case_ids()

    def case_ids_in_order(self) -> list[str]:
        with self._lock:
            return self.rows.case_ids_in_order()

    def patient_of(self, case_id: str) -> str | None:
        with self._lock:
            return self.rows.patient_of(case_id)

    def case_ids_for_path(self, path: Path) -> set[str]:
        """Cases that store an image at exactly this path (the leakage guard's first check)."""
        with self._lock:
            return self.rows.case_ids_for_path(path)

    def get_case(self, case_id: str) -> StoredCase | None:
        """The stored case: its fields, report sections, metadata and images (without vectors)."""
        with self._lock:
            return self.rows.get_case(case_id)

    def stored_cases(self) -> Iterator[Case]:
        """Every stored case as the `Case` it was ingested from (images by their stored paths), in
        insertion order: what re-embedding the index with another encoder needs."""
        for case_id in self.case_ids_in_order():
            stored = self.get_case(case_id)
            if stored is not None:  # else deleted meanwhile
                yield stored.to_case()

    def image_rows_for(self, ids: Iterable[int]) -> list[ImageRow]:
        """Stored image rows for these FAISS image ids, in the given order (unknown ids are skipped)."""
        wanted = [int(i) for i in ids]
        if not wanted:
            return []
        with self._lock:
            return self.rows.image_rows_for(wanted)

    def info(self) -> IndexInfo:
        """Counts (cases, of which with a report and image-only, and images), dimensions, encoders, index
        kinds, sizes on disk and generations."""
        with self._lock, self.rows.snapshot():
            cases, images, generation = self.rows.count("cases"), self.rows.count("images"), self.rows.generation()
            image_only = self.rows.count_image_only()
        files = {f.name: f.stat().st_size for f in sorted(self.root.iterdir()) if f.is_file()}
        return IndexInfo(
            name=self.root.name,
            path=str(self.root),
            backend="local",
            cases=cases,
            cases_with_report=cases - image_only,
            cases_image_only=image_only,
            images=images,
            image_dim=self.manifest.image_dim,
            image_encoder=self.manifest.image_encoder,
            image_encoder_fingerprint=self.manifest.image_encoder_fingerprint,
            text_dim=self.manifest.text_dim,
            text_encoder=self.manifest.text_encoder,
            image_index=self.image_index.kind,
            text_index=self.text_index.kind,
            generation=generation,
            flushed_generation=self.manifest.faiss_generation,
            bytes_on_disk=sum(files.values()),
            files=files,
            memory_bytes=self.image_index.memory_bytes() + self.text_index.memory_bytes(),
            created=self.manifest.created,
        )

    # -- search ------------------------------------------------------------------------------------------------
    def search_ids(
        self,
        space: str,
        queries: np.ndarray,
        k: int,
        scope: SearchScope = EVERY_CASE,
    ) -> list[tuple[list[int], list[float]]]:
        """Top-k (row ids, scores) per query in `space` ("image": image rows, "text": case rows), best
        first, without reading the rows: the searcher rescores candidates and reads only the few it keeps.

        Image-only cases are never among the "text" results; `scope.reported_only` leaves them out of the
        "image" results too (for searches whose ranking also reads the report side)."""
        with self._lock:
            self._faiss.catch_up()
            index = self.image_index if space == "image" else self.text_index
            allowed, excluded = self._queries.id_sets(space, scope)
            scores, ids = index.search(queries, k, allowed_ids=allowed, excluded_ids=excluded)
        found = ids >= 0
        return [(i[m].tolist(), s[m].tolist()) for s, i, m in zip(scores, ids, found, strict=True)]

    def _search(self, space: str, queries: np.ndarray, k: int, scope: SearchScope) -> list[list[Hit]]:
        found = self.search_ids(space, queries, k, scope)
        sql = IMAGE_HIT_SQL if space == "image" else TEXT_HIT_SQL
        with self._lock:
            return [list(self._queries.hits_by_row(sql, ids, scores).values()) for ids, scores in found]

    def search_images(
        self,
        queries: np.ndarray,
        k: int,
        scope: SearchScope = EVERY_CASE,
    ) -> list[list[Hit]]:
        """Top-k stored images per query vector (image-space vectors), best first, within `scope`.
        Images of image-only cases come back (with report ""), unless `scope.reported_only`."""
        return self._search("image", queries, k, scope)

    def search_texts(
        self,
        queries: np.ndarray,
        k: int,
        scope: SearchScope = EVERY_CASE,
    ) -> list[list[Hit]]:
        """Top-k cases per query vector (report-text-space vectors), within `scope`; image_id is the case's
        first image. Image-only cases (no report) are never returned."""
        return self._search("text", queries, k, scope)

    # -- stored vectors (for exact rescoring) --------------------------------------------------------------
    def image_ids_of_cases(self, case_row_ids: Sequence[int]) -> list[int]:
        """The image row ids of these case rows (text-space ids), in row order."""
        with self._lock:
            return self._queries.image_ids_of(IN_LIST, case_row_ids)

    def sibling_image_ids(self, image_ids: Sequence[int]) -> list[int]:
        """Every image row id of the cases that own these image rows (them included), in row order."""
        with self._lock:
            return self._queries.image_ids_of(f"(SELECT case_pk FROM images WHERE id IN {IN_LIST})", image_ids)

    def rescoring_rows(
        self, image_ids: Sequence[int], *, text: bool
    ) -> tuple[list[str], np.ndarray, np.ndarray | None]:
        """For image row ids: their case ids, stored image vectors and (with `text`) their cases' report
        vectors, in order, from one query. Unknown ids get an empty case id and zero vectors."""
        with self._lock:
            return self._queries.rescoring_rows(image_ids, text=text)

    def image_hits(self, image_ids: Sequence[int], scores: Sequence[float]) -> dict[int, Hit]:
        """{image row id: hit} with the given scores, in order (rows that no longer exist are left out)."""
        with self._lock:
            return self._queries.hits_by_row(IMAGE_HIT_SQL, image_ids, scores)

    def case_text_vectors(self, case_ids: Sequence[str]) -> np.ndarray:
        """Stored (unit) report vectors for these case ids, in order; zeros for unknown ids."""
        with self._lock:
            return self._queries.case_text_vectors(case_ids)
