"""Checking an index's files against each other (`check_index`), what `kgreport index check NAME` runs;
`retrieval.index_repair` repairs what can be repaired (`kgreport index repair NAME`).

`store.sqlite` is the source of truth: it holds every case, report, image path and vector. The FAISS files
are derived from it and `manifest.json` labels it (format, dimensions, which encoders made the vectors).
So the check reads each file on its own, without opening a `CaseStore` (which would rebuild or refuse
instead of saying what is wrong), and writes nothing: SQLite is opened read-only. Every problem is one
line naming the file it is about. A zero-length `store.sqlite` beside FAISS files with 115 vectors is a
lost database, not an empty index.

Repair rebuilds the FAISS files from SQLite (the store's own rebuild, saved atomically) under the index's
writer lock. What it cannot do, it says, and then changes nothing: FAISS holds vectors only, so a lost or
corrupt database cannot be recovered from it; and the encoder names are recorded only in the manifest, so
an unreadable manifest is rewritten only when the caller names the encoders the index was built with.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kgreport.json_types import JsonObject, UncheckedJson
from kgreport.retrieval.manifest import (
    FORMAT_VERSION,
    MANIFEST_KEYS,
    IndexNotFoundError,
)
from kgreport.retrieval.stores.local.faiss_mirror import SPACES
from kgreport.retrieval.stores.local.rows import from_blob, sqlite_file_problem
from kgreport.retrieval.vector_index import VectorIndex

TABLES = ("cases", "images", "meta", "changes")
VECTOR_SAMPLE = 64  # stored vectors compared with their FAISS copies, per space
SCORE_TOLERANCE = 1e-3  # a unit vector scores 1 against itself; below 1 - this, the FAISS copy differs
FAISS_FILES = {"image": "image.faiss", "text": "text.faiss"}
DIM_KEYS = {"image": "image_dim", "text": "text_dim"}


@dataclass
class IndexCheck:
    """What `check_index` found: `problems` (one line each, naming the file), `notes` (states the store
    mends by itself, such as writes not yet saved to the FAISS files), `facts` (counts, dimensions,
    generations) and `damaged` (the names of the files with a problem)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: JsonObject = field(default_factory=dict)
    damaged: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, file: str, message: str) -> None:
        self.problems.append(f"{file}: {message}")
        self.damaged.add(file)

    def as_json(self) -> JsonObject:
        return {
            "ok": self.ok,
            "problems": self.problems,
            "notes": self.notes,
            "damaged": sorted(self.damaged),
            "facts": self.facts,
        }


@dataclass
class CheckState:
    """What repair needs to know beyond the problem lines."""

    manifest: UncheckedJson | None = None  # parsed, when it is a JSON object
    manifest_fault: str | None = None  # None, "missing", "unreadable", "version", "incomplete", "dims"
    database_readable: bool = False
    stored_dims: dict[str, int | None] = field(default_factory=dict)  # from SQLite's vector sizes
    faiss_dims: dict[str, int] = field(default_factory=dict)  # from readable FAISS files
    generation: int | None = None
    flushed: int | None = None  # the generation the manifest says the FAISS files reflect


# -- check ------------------------------------------------------------------------------------------------------
def check_index(root: Path) -> IndexCheck:
    """Check the index in `root`: the manifest, SQLite's integrity and tables, and each FAISS file against
    the SQLite rows of its space (count, ids, dimension, a sample of vectors). Modifies nothing.

    Facts, where they could be read: `name`, `files` (sizes), the manifest's `format_version`, `image_dim`,
    `text_dim`, `image_encoder`, `text_encoder` and `flushed_generation`; SQLite's `generation`, `cases` and
    `images`; `image_vectors`/`text_vectors` and `image_index`/`text_index` (kind) of the FAISS files; and
    `unsaved_writes`, the writes the FAISS files do not reflect yet.
    """
    return inspect_index(Path(root))[0]


def inspect_index(root: Path) -> tuple[IndexCheck, CheckState]:
    """The check and what a repair needs to know beyond its problem lines."""
    if not root.is_dir():
        raise IndexNotFoundError(f"{root}: no index here")
    check, state = IndexCheck(), CheckState()
    check.facts["name"] = root.name
    check.facts["files"] = {
        p.name: p.stat().st_size for p in sorted(root.iterdir()) if p.is_file() and not p.name.startswith(".")
    }
    _check_manifest(root / "manifest.json", check, state)
    dims = {space: _manifest_dim(state, key) for space, key in DIM_KEYS.items()}
    with _read_only(root / "store.sqlite", check) as db:
        rows = _check_database(db, check, state, dims) if db is not None else None
        for space, table, column in SPACES:
            _check_faiss(root / FAISS_FILES[space], space, table, column, db, rows, check, state, dims)
    for leftover in sorted(root.glob("*.tmp")):
        check.notes.append(f"{leftover.name}: left by an interrupted write; the index does not read it")
    return check, state


def _manifest_dim(state: CheckState, key: str) -> int | None:
    """The manifest's dimension under `key`, if it has a usable one."""
    value = (state.manifest or {}).get(key) if state.manifest_fault != "version" else None
    return value if type(value) is int and value > 0 else None


def _check_manifest(path: Path, check: IndexCheck, state: CheckState) -> None:
    name = path.name
    if not path.is_file():
        state.manifest_fault = "missing"
        check.problem(name, "missing")
        return
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # JSON and Unicode errors are ValueErrors
        state.manifest_fault = "unreadable"
        check.problem(name, f"not readable JSON ({err})")
        return
    if not isinstance(manifest, dict):
        state.manifest_fault = "unreadable"
        check.problem(name, "not a JSON object")
        return
    state.manifest = manifest
    if manifest.get("format_version") != FORMAT_VERSION:
        state.manifest_fault = "version"
        check.problem(name, f"index format {manifest.get('format_version')!r}, this kgreport reads {FORMAT_VERSION}")
        return
    faults = [f"no {key}" for key in MANIFEST_KEYS if key not in manifest]
    faults += [
        f"{key} {manifest[key]!r} is not a positive integer"
        for key in DIM_KEYS.values()
        if key in manifest and not (type(manifest[key]) is int and manifest[key] > 0)
    ]
    flushed = manifest.get("faiss_generation")
    if flushed is not None and not (type(flushed) is int and flushed >= 0):
        faults.append(f"faiss_generation {flushed!r} is not a generation")
    elif flushed is not None:
        state.flushed = flushed
    if faults:
        state.manifest_fault = "incomplete"
        check.problem(name, "; ".join(faults))
    for key in ("format_version", "image_dim", "text_dim", "image_encoder", "text_encoder"):
        check.facts[key] = manifest.get(key)
    check.facts["flushed_generation"] = state.flushed


@contextmanager
def _read_only(path: Path, check: IndexCheck) -> Iterator[sqlite3.Connection | None]:
    """A read-only connection to the database at `path`, or None (and a problem) if it cannot be one.
    Size and header are checked first: SQLite would take a zero-length file for an empty database."""
    if problem := sqlite_file_problem(path):
        check.problem(path.name, f"not a readable SQLite database ({problem})")
        yield None
        return
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as err:
        check.problem(path.name, f"cannot be opened ({err})")
        yield None
        return
    try:
        yield db
    finally:
        db.close()


@dataclass
class _Rows:
    """The row ids of each space in SQLite, and the change log since the FAISS files were saved (None when
    it no longer reaches back that far)."""

    generation: int
    ids: dict[str, np.ndarray]
    changes: list[tuple[str, int, int]] | None


def _check_database(
    db: sqlite3.Connection, check: IndexCheck, state: CheckState, dims: dict[str, int | None]
) -> _Rows | None:
    """SQLite's integrity, tables, generation, counts and vector sizes; the rows FAISS must hold."""
    name = "store.sqlite"
    try:
        verdict = [str(r[0]) for r in db.execute("PRAGMA integrity_check(20)")]
        if verdict != ["ok"]:
            check.problem(name, f"fails SQLite's integrity check ({'; '.join(verdict[:5])})")
            return None
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if missing := [t for t in TABLES if t not in tables]:
            check.problem(name, f"no {', '.join(missing)} table: not a kgreport index database")
            return None
        db.execute("BEGIN")  # one snapshot for everything below
        try:
            row = db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
            generation = int(row[0]) if row else 0
            ids = {
                space: np.array([r[0] for r in db.execute(f"SELECT id FROM {table}")], dtype=np.int64)
                for space, table, _ in SPACES
            }
            sizes = {
                space: [int(r[0]) for r in db.execute(f"SELECT DISTINCT length({column}) FROM {table}")]
                for space, table, column in SPACES
            }
            changes = _changes_since(db, state.flushed, generation)
        finally:
            db.execute("COMMIT")
    except (sqlite3.Error, ValueError) as err:
        check.problem(name, f"not a readable kgreport index database ({err})")
        return None
    state.database_readable, state.generation = True, generation
    check.facts.update(generation=generation, cases=len(ids["text"]), images=len(ids["image"]))
    for space, table, _ in SPACES:
        if len(sizes[space]) > 1 or any(size % 4 for size in sizes[space]):
            state.database_readable = False
            check.problem(name, f"{table} rows hold vectors of several sizes ({sorted(sizes[space])} bytes)")
            continue
        stored = state.stored_dims[space] = sizes[space][0] // 4 if sizes[space] else None
        if stored is not None and dims[space] is not None and stored != dims[space]:
            state.manifest_fault = state.manifest_fault or "dims"
            check.problem(
                "manifest.json", f"{DIM_KEYS[space]} {dims[space]}, but store.sqlite holds {stored}-d vectors"
            )
    if generation == 0 and state.flushed:
        state.database_readable = False
        check.problem(
            name,
            f"holds no cases, but the FAISS files were saved from it at generation {state.flushed}: the database "
            "was emptied or replaced",
        )
    elif state.flushed is not None and generation < state.flushed:
        check.problem(
            name,
            f"at generation {generation}, older than the FAISS files (generation {state.flushed}): an older copy "
            "was put back, and what was written after it is not in it",
        )
    elif state.flushed is not None and generation > state.flushed:
        check.facts["unsaved_writes"] = generation - state.flushed
        check.notes.append(
            f"image.faiss, text.faiss: reflect generation {state.flushed}, store.sqlite is at {generation} "
            f"({generation - state.flushed} writes not yet saved to them: a writer still open, or one stopped before "
            "it flushed); the store applies them from store.sqlite when it opens, and repair saves them now"
        )
    return _Rows(generation, ids, changes)


def _changes_since(db: sqlite3.Connection, flushed: int | None, generation: int) -> list[tuple[str, int, int]] | None:
    """(space, row id, added) logged after generation `flushed`, or None if the log does not cover them all."""
    if flushed is None or flushed >= generation:
        return [] if flushed == generation else None
    rows = db.execute(
        "SELECT generation, space, row_id, added FROM changes WHERE generation > ? AND generation <= ?",
        (flushed, generation),
    ).fetchall()
    if {r[0] for r in rows} != set(range(flushed + 1, generation + 1)):
        return None
    return [(str(r[1]), int(r[2]), int(r[3])) for r in rows]


def _check_faiss(
    path: Path,
    space: str,
    table: str,
    column: str,
    db: sqlite3.Connection | None,
    rows: _Rows | None,
    check: IndexCheck,
    state: CheckState,
    dims: dict[str, int | None],
) -> None:
    """One FAISS file: readable, of the manifest's dimension, holding exactly the rows of its space."""
    name = path.name
    if not path.is_file():
        if state.flushed:
            check.problem(name, "missing")
        else:
            check.notes.append(f"{name}: not saved yet; the store builds it from store.sqlite when it opens")
        return
    try:
        index = VectorIndex.load(path)
    except Exception as err:  # whatever a garbage file makes FAISS raise is a problem with that file
        check.problem(name, f"{err}".removeprefix(f"{path}: ") or type(err).__name__)
        return
    check.facts[f"{space}_vectors"], check.facts[f"{space}_index"] = len(index), index.kind
    state.faiss_dims[space] = index.dim
    expected_dim = dims[space] or state.stored_dims.get(space)
    if expected_dim is not None and index.dim != expected_dim:
        check.problem(name, f"{index.dim}-d vectors, the index's are {expected_dim}-d")
        return
    if rows is None or db is None:
        return
    if rows.changes is None and state.flushed is not None and state.flushed < rows.generation:
        check.notes.append(
            f"{name}: its ids cannot be compared with store.sqlite's: the change log no longer reaches back to "
            f"generation {state.flushed}; the store rebuilds it from store.sqlite when it opens"
        )
    stored = rows.ids[space]
    held = index.ids()
    if rows.changes is not None:  # what the file should hold at SQLite's generation: apply the unsaved writes
        removed = np.array([r for s, r, added in rows.changes if s == space and not added], dtype=np.int64)
        added_ids = np.array([r for s, r, added in rows.changes if s == space and added], dtype=np.int64)
        held = np.union1d(np.setdiff1d(held, removed), np.intersect1d(added_ids, stored))
        extra, missing = np.setdiff1d(held, stored), np.setdiff1d(stored, held)
        if len(extra) or len(missing):
            after = " after the unsaved writes" if rows.changes else ""
            check.problem(
                name,
                f"holds {len(held)} vectors{after}, store.sqlite {len(stored)} {table} rows ({len(extra)} not in "
                f"store.sqlite, {len(missing)} missing)",
            )
            return
    _check_vector_sample(index, db, table, column, np.intersect1d(index.ids(), stored), check, name)


def _check_vector_sample(
    index: VectorIndex, db: sqlite3.Connection, table: str, column: str, ids: np.ndarray, check: IndexCheck, name: str
) -> None:
    """Compare up to VECTOR_SAMPLE stored vectors with FAISS's copies of the same ids: equal ids alone do not
    tell a file saved from this database from one of another index of the same size."""
    if not len(ids):
        return
    picked = ids[np.linspace(0, len(ids) - 1, min(len(ids), VECTOR_SAMPLE)).astype(int)]
    try:
        found = dict(
            db.execute(
                f"SELECT id, {column} FROM {table} WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps([int(i) for i in picked]),),
            ).fetchall()
        )
    except sqlite3.Error:  # the rows were readable a moment ago: a concurrent change, not a FAISS problem
        return
    sample = np.array([i for i in picked if int(i) in found and from_blob(found[int(i)]).any()], dtype=np.int64)
    if not len(sample):
        return
    queries = np.stack([from_blob(found[int(i)]) for i in sample])
    scores, hits = index.search(queries, len(sample), allowed_ids=sample)
    own = np.where(hits == sample[:, None], scores, -np.inf).max(axis=1)
    differ = int((own < 1 - SCORE_TOLERANCE).sum())
    if differ:
        check.problem(name, f"{differ} of {len(sample)} sampled vectors differ from store.sqlite's for the same ids")
