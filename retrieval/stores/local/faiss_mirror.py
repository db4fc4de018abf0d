"""The FAISS side of a case store: two indexes derived from SQLite, kept equal to it, and their recovery.

`image.faiss` holds one vector per stored image (keyed by the image row id), `text.faiss` one report
vector per case (keyed by the case row id). `save()` writes both atomically and then records, in the
manifest, the SQLite generation they reflect. `load()` takes the files only if that generation is SQLite's
and their sizes match; files that are stale (a crash between commit and save), missing, corrupt or of the
wrong size are rebuilt from the vectors in SQLite: a half-written index is recovered, never served stale.

Several processes may share a store (service workers, the CLI beside the service). Each write logs the
rows it added and removed (`log_changes`), and a copy that finds the generation moved on (`catch_up`,
before a search or at its own next write) applies those changes, or reloads when the log no longer
reaches back that far.

Not locked by itself: `CaseStore` holds its lock around every call.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from kgreport.retrieval.config import IndexParams
from kgreport.retrieval.manifest import MANIFEST_FILE, IndexManifest, IndexUnreadableError
from kgreport.retrieval.stores.local.rows import IN_LIST, from_blob, json_list
from kgreport.retrieval.stores.local.rows_db import CaseRows, RowVectors
from kgreport.retrieval.vector_index import VectorIndex, VectorIndexError

log = logging.getLogger(__name__)

REBUILD_CHUNK = 20_000  # rows read from SQLite per FAISS add while rebuilding
CHANGE_LOG_GENERATIONS = 1000  # writes whose row changes are kept for other processes to catch up with

# (space, table, vector column) of the two FAISS indexes; the space names are those of the change log.
SPACES = (("image", "images", "vector"), ("text", "cases", "text_vector"))


class FaissMirror:
    """The in-memory FAISS indexes of one store and the SQLite generation they reflect."""

    def __init__(self, rows: CaseRows, root: Path, manifest: IndexManifest, params: IndexParams) -> None:
        self.rows = rows
        self.root = root
        self.manifest = manifest  # the store's own record: `save` records the flushed generation in it
        self.params = params
        self.image_index = VectorIndex(manifest.image_dim, params)
        self.text_index = VectorIndex(manifest.text_dim, params)
        self.generation = 0  # the SQLite generation the in-memory indexes reflect

    def _indexes(self) -> tuple[VectorIndex, VectorIndex]:
        return self.image_index, self.text_index

    # -- load, rebuild, save ---------------------------------------------------------------------------------
    def load(self) -> None:
        """Load the FAISS files if they match SQLite; otherwise rebuild them from SQLite."""
        with self.rows.snapshot():
            generation = self.rows.generation()
            n_images, n_cases = self.rows.count("images"), self.rows.count("cases")
        if generation == 0:
            self.image_index = VectorIndex(self.manifest.image_dim, self.params)
            self.text_index = VectorIndex(self.manifest.text_dim, self.params)
            self.generation = 0
            return  # nothing was ever written: empty indexes
        recorded = self.manifest.faiss_generation
        problem = None
        if recorded != generation:
            problem = f"FAISS files reflect generation {recorded}, SQLite is at {generation} (crash before flush?)"
        else:
            try:
                image = VectorIndex.load(self.root / "image.faiss", self.params)
                text = VectorIndex.load(self.root / "text.faiss", self.params)
                if (image.dim, text.dim) != (self.manifest.image_dim, self.manifest.text_dim):
                    problem = f"FAISS dimensions {image.dim}/{text.dim} differ from the manifest's"
                elif (len(image), len(text)) != (n_images, n_cases):
                    problem = f"FAISS holds {len(image)}/{len(text)} vectors, SQLite {n_images}/{n_cases}"
                else:
                    self.image_index, self.text_index = image, text
                    self.generation = generation
            except VectorIndexError as err:
                problem = str(err)
        if problem:
            log.warning("%s: %s; rebuilding the FAISS indexes from store.sqlite", self.root, problem)
            self.rebuild()

    def rebuild(self) -> None:
        """Fresh FAISS indexes from the vectors in SQLite (one consistent snapshot)."""
        with self.rows.snapshot():
            generation = self.rows.generation()
            image = self._index_from_table("images", "vector", self.manifest.image_dim)
            text = self._index_from_table("cases", "text_vector", self.manifest.text_dim)
        self.image_index, self.text_index = image, text
        self.generation = generation

    def _index_from_table(self, table: str, column: str, dim: int) -> VectorIndex:
        index = VectorIndex(dim, self.params)
        db = self.rows.db
        ids = np.array([r[0] for r in db.execute(f"SELECT id FROM {table} ORDER BY id")], dtype=np.int64)
        if len(ids) >= self.params.exact_threshold:
            # Train IVF once on a sample of everything, rather than switching structure mid-stream.
            rng = np.random.default_rng(0)
            picked = np.sort(rng.choice(ids, min(len(ids), self.params.train_sample), replace=False))
            index.train(self._vectors_for(table, column, picked), expected_size=len(ids))
        cursor = db.execute(f"SELECT id, {column} FROM {table} ORDER BY id")
        while rows := cursor.fetchmany(REBUILD_CHUNK):
            index.add(np.array([r[0] for r in rows], dtype=np.int64), np.stack([from_blob(r[1]) for r in rows]))
        return index

    def _vectors_for(self, table: str, column: str, ids: np.ndarray) -> np.ndarray:
        parts = []
        for start in range(0, len(ids), REBUILD_CHUNK):
            chunk = [int(i) for i in ids[start : start + REBUILD_CHUNK]]
            rows = self.rows.db.execute(
                f"SELECT {column} FROM {table} WHERE id IN {IN_LIST} ORDER BY id", (json.dumps(chunk),)
            )
            parts += [from_blob(r[0]) for r in rows]
        return np.stack(parts)

    def save(self) -> None:
        """Write both FAISS files atomically, then record which SQLite generation they reflect."""
        self.image_index.save(self.root / "image.faiss")
        self.text_index.save(self.root / "text.faiss")
        # Recorded last: a crash before this line leaves the old generation, so load() rebuilds.
        self.manifest.faiss_generation = self.generation
        self.manifest.save(self.root / MANIFEST_FILE)

    # -- keeping up with writes ------------------------------------------------------------------------------
    def log_changes(
        self, generation: int, removed: tuple[list[int], list[int]], added: tuple[list[int], list[int]]
    ) -> None:
        """Record a write's row changes in its own transaction (see `catch_up`); forget old ones."""
        rows = [
            (generation, space, row_id, flag)
            for space, gone, new in (("image", removed[0], added[0]), ("text", removed[1], added[1]))
            for row_ids, flag in ((gone, 0), (new, 1))
            for row_id in row_ids
        ]
        db = self.rows.db
        db.executemany("INSERT INTO changes(generation, space, row_id, added) VALUES (?,?,?,?)", rows)
        db.execute("DELETE FROM changes WHERE generation <= ?", (generation - CHANGE_LOG_GENERATIONS,))

    def apply_write(
        self, before: int, removed: tuple[list[int], list[int]], added: tuple[RowVectors, RowVectors]
    ) -> None:
        """Apply a just-committed write to the in-memory indexes (catching up first if they were stale)."""
        if before != self.generation:  # another process wrote since our last look: its changes too
            self.catch_up()
            return
        for index, gone, new in zip(self._indexes(), removed, added, strict=True):
            index.remove(np.array(gone, dtype=np.int64))
            if new:
                index.add(np.array([pk for pk, _ in new], dtype=np.int64), np.stack([v for _, v in new]))
        self.generation = before + 1

    def catch_up(self) -> None:
        """Bring the in-memory indexes up to SQLite if another process (a second service worker, the CLI)
        has written since: apply the logged row changes, or, when they are no longer all kept, load its
        flushed files or rebuild. Called before every search; when nothing changed it costs one indexed read."""
        if self.rows.generation() == self.generation:
            return
        try:
            with self.rows.snapshot():
                applied = self._apply_logged_changes()
        except VectorIndexError as err:  # the log disagrees with our copy: start again from SQLite
            log.warning("%s: %s; rebuilding the FAISS indexes from store.sqlite", self.root, err)
            self.rebuild()
            return
        if applied:
            return
        try:
            recorded = IndexManifest.load(self.root / MANIFEST_FILE).faiss_generation
        except (OSError, ValueError, IndexUnreadableError):
            recorded = None  # mid-replace or unreadable: rebuild from SQLite
        self.manifest.faiss_generation = recorded
        log.info("%s: another process wrote to this index; reloading its FAISS indexes", self.root)
        self.load()

    def _apply_logged_changes(self) -> bool:
        """Apply the change log since our generation (inside a read snapshot); False if part of it is gone."""
        db = self.rows.db
        generation = self.rows.generation()
        rows = db.execute(
            "SELECT generation, space, row_id, added FROM changes WHERE generation > ? AND generation <= ?",
            (self.generation, generation),
        ).fetchall()
        if {r["generation"] for r in rows} != set(range(self.generation + 1, generation + 1)):
            return False
        for index, (space, table, column) in zip(self._indexes(), SPACES, strict=True):
            index.remove(
                np.array([r["row_id"] for r in rows if r["space"] == space and not r["added"]], dtype=np.int64)
            )
            new = [r["row_id"] for r in rows if r["space"] == space and r["added"]]
            stored = db.execute(  # rows added and deleted again within the window are gone: skipped
                f"SELECT id, {column} FROM {table} WHERE id IN {IN_LIST} ORDER BY id", (json_list(new),)
            ).fetchall()
            if stored:
                index.add(np.array([r[0] for r in stored], dtype=np.int64), np.stack([from_blob(r[1]) for r in stored]))
        self.generation = generation
        return True
