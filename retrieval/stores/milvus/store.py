"""A case store on a Milvus server: the same interface as `CaseStore`, shared by every replica.

Selected with `KGREPORT_CASE_STORE=milvus://HOST:PORT`. Everything a replica needs to search and to show
a case lives in Milvus (`schema.py`): vectors, case and image fields, report sections, metadata
and image paths; nothing is kept on local disk, so a write through one replica is seen by the others at
their next read: reads are strong, or, for searches, given the last finished write's timestamp by the
caller that holds the write leases (`read_guarantee`, see `connection.py`), one per search
(`read_point`). Reads and writes name the index's aliases, so a rebuild swapped in (`registry.py`)
is read from the next call on.

Searches are exact (FLAT) below `IndexParams.exact_threshold` rows and HNSW above it, switched when a
write crosses the threshold; filters and the leakage exclusions run inside Milvus as boolean
expressions (`filters.py`). Writes are serialised across machines by the caller's lease
(`usecases.stores.write_lease`); this class serialises its own threads. A write stores a batch's image rows, then
its case rows, then bumps the index's generation in the registry: a write cut short leaves images
without a case, which no read shows and the next write of that case removes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from kgreport.retrieval.config import IndexParams
from kgreport.retrieval.manifest import IndexExistsError, IndexManifest, IndexNotFoundError, IndexUnreadableError
from kgreport.retrieval.records import Case, Hit, ImageRow, IndexInfo, StoredCase
from kgreport.retrieval.stores.interface import EncoderLabel
from kgreport.retrieval.stores.local.rows_db import DuplicateCaseError, prepare_batch
from kgreport.retrieval.stores.milvus.connection import CaseStoreUnavailableError, MilvusConnection
from kgreport.retrieval.stores.milvus.filters import filter_expression, text_list
from kgreport.retrieval.stores.milvus.reads import MilvusReads, none_if_empty
from kgreport.retrieval.stores.milvus.registry import (
    collections_of,
    create_collections,
    drop_index,
    index_names,
    registry_row,
    retire,
    swap_in,
    write_registry,
)
from kgreport.retrieval.stores.milvus.schema import case_row, image_row, search_params, vector_index
from kgreport.retrieval.stores.scope import EVERY_CASE, SearchScope

# What a search must see: the Milvus timestamp of the index's latest finished write, or None for a strong
# read (while a write is under way, or when nobody can say). Given by the caller that holds the write
# leases (`usecases.stores.factory`); without one every read is strong.
ReadGuarantee = Callable[[], int | None]
MAX_TOP_K = 16_384  # Milvus's largest limit
REPLACED_CHECK_S = 1.0  # how often an open handle asks whether its index was rebuilt or deleted
RETIRE_AFTER_S = 5 * REPLACED_CHECK_S  # how long a swapped-out copy stays readable for such handles


class MilvusCaseStore:
    """One named index in Milvus; use `create`, `open`, `exists` and `drop`, not the constructor."""

    def __init__(
        self,
        connection: MilvusConnection,
        name: str,
        manifest: IndexManifest,
        params: IndexParams | None,
        read_guarantee: ReadGuarantee | None = None,
    ):
        self.connection = connection
        self._name = name
        self.manifest = manifest
        self.params = params or IndexParams()
        self.read_guarantee: ReadGuarantee = self._pinned_or_asked
        self._ask_guarantee: ReadGuarantee = read_guarantee or _strong
        self._pin = threading.local()  # this thread's guarantee inside `read_point`
        self.images, self.cases = collections_of(name, manifest.to_json())
        self._reads = MilvusReads(
            connection, self.images, self.cases, manifest.image_dim, manifest.text_dim, self.read_guarantee
        )
        self._lock = threading.RLock()
        self._replaced_checked_at = time.monotonic()
        self._check_dimensions()
        for collection in (self.images, self.cases):
            connection.admin(f"loading {collection}", connection.client.load_collection, collection)

    @property
    def name(self) -> str:
        return self._name

    @property
    def location(self) -> str:
        """Where the index lives, for messages."""
        return f"{self.connection.url} ({self.images}, {self.cases})"

    # -- registry and lifecycle (`registry.py`) ------------------------------------------------
    @classmethod
    def exists(cls, connection: MilvusConnection, name: str) -> bool:
        return registry_row(connection, name) is not None

    @classmethod
    def names(cls, connection: MilvusConnection) -> list[str]:
        return index_names(connection)

    @classmethod
    def create(
        cls,
        connection: MilvusConnection,
        name: str,
        *,
        image_dim: int,
        text_dim: int,
        image_encoder: str,
        text_encoder: str,
        params: IndexParams | None = None,
        image_encoder_fingerprint: str | None = None,
        read_guarantee: ReadGuarantee | None = None,
    ) -> MilvusCaseStore:
        """A new, empty index; FileExistsError if one of this name exists. Collections left by a create
        that was cut short (no registry row yet) are dropped and made again."""
        if cls.exists(connection, name):
            raise IndexExistsError(f"index {name!r} already exists on {connection.url}")
        collections = create_collections(connection, name, image_dim, text_dim, params or IndexParams())
        made = IndexManifest.new(
            image_dim=image_dim,
            text_dim=text_dim,
            image_encoder=image_encoder,
            text_encoder=text_encoder,
            image_encoder_fingerprint=image_encoder_fingerprint,
        )
        manifest = replace(
            made,
            backend="milvus",
            image_index="flat",
            text_index="flat",
            metadata_keys=[],
            collections=collections,
        )
        write_registry(connection, name, manifest.to_json(), 0)  # last: an index exists once it is registered
        return cls(connection, name, manifest, params, read_guarantee)

    @classmethod
    def create_for(
        cls,
        connection: MilvusConnection,
        name: str,
        image_encoder: EncoderLabel,
        text_encoder: EncoderLabel,
        params: IndexParams | None = None,
        read_guarantee: ReadGuarantee | None = None,
    ) -> MilvusCaseStore:
        """A new index sized and labelled for these encoders (as `CaseStore.create_for`)."""
        return cls.create(
            connection,
            name,
            image_dim=image_encoder.dim,
            text_dim=text_encoder.dim,
            image_encoder=image_encoder.name,
            text_encoder=text_encoder.name,
            params=params,
            image_encoder_fingerprint=getattr(image_encoder, "fingerprint", None),
            read_guarantee=read_guarantee,
        )

    @classmethod
    def open(
        cls,
        connection: MilvusConnection,
        name: str,
        params: IndexParams | None = None,
        read_guarantee: ReadGuarantee | None = None,
    ) -> MilvusCaseStore:
        row = registry_row(connection, name)
        if row is None:
            raise IndexNotFoundError(f"index {name!r} not found on {connection.url}")
        return cls(connection, name, _manifest(row, connection), params, read_guarantee)

    @classmethod
    def drop(cls, connection: MilvusConnection, name: str) -> bool:
        """Delete the index; False if there was none."""
        return drop_index(connection, name)

    @classmethod
    def swap_in(cls, connection: MilvusConnection, staging: str, name: str) -> None:
        """Make the index `staging` the index `name` (`milvus_registry.swap_in`), then, once every
        replica's open handle has had time to notice (`RETIRE_AFTER_S`), drop the copy it replaced."""
        current = swap_in(connection, staging, name)
        time.sleep(RETIRE_AFTER_S)
        retire(connection, name, keep=current)

    def _check_dimensions(self) -> None:
        """IndexUnreadableError naming both sizes when a collection's vectors are not the manifest's."""
        for collection, dim in ((self.images, self.manifest.image_dim), (self.cases, self.manifest.text_dim)):
            described = self.connection.call(
                f"describing {collection}", self.connection.client.describe_collection, collection
            )
            dims = [f.get("params", {}).get("dim") for f in described["fields"] if f["name"] == "vector"]
            if not dims or int(dims[0]) != dim:
                raise IndexUnreadableError(
                    f"index {self.name!r}: collection {collection} holds {dims[0] if dims else 'no'}-d vectors, "
                    f"its manifest and encoder say {dim}-d"
                )

    def replaced_on_disk(self) -> bool:
        """Whether the index was deleted or made anew (another creation time) since this handle opened it.

        Asked before every request's search, so it reads the registry at most once a `REPLACED_CHECK_S`:
        a rebuild swapped in by another replica is seen within that (case writes are seen at once)."""
        now = time.monotonic()
        if now - self._replaced_checked_at < REPLACED_CHECK_S:
            return False
        row = registry_row(self.connection, self.name)
        self._replaced_checked_at = now
        return row is None or row["manifest"].get("created") != self.manifest.created

    @contextmanager
    def read_point(self) -> Iterator[None]:
        """Every read of the block, on this thread, under one read guarantee (asked once)."""
        if getattr(self._pin, "active", False):  # nested: the outer point holds
            yield
            return
        self._pin.guarantee, self._pin.active = self._ask_guarantee(), True
        try:
            yield
        finally:
            self._pin.active = False

    def _pinned_or_asked(self) -> int | None:
        return self._pin.guarantee if getattr(self._pin, "active", False) else self._ask_guarantee()

    def close(self) -> None:
        """Nothing to release: the connection is shared by every store on the server."""

    def __enter__(self) -> MilvusCaseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- generation and persistence -------------------------------------------------------------------
    def generation(self) -> int:
        row = registry_row(self.connection, self.name)
        if row is None:
            raise IndexNotFoundError(f"index {self.name!r} is gone from {self.connection.url}")
        return int(row["generation"])

    def flush(self) -> None:
        """Nothing to do: an acknowledged insert or delete is already durable in Milvus's log, and Milvus
        seals segments by itself. (Asking it to flush after every ingest batch cost 3 s a build.)"""

    def rebuild_faiss(self) -> None:
        """Nothing to rebuild: Milvus builds its own indexes from its own rows."""

    def _commit(self, metadata_keys: Iterable[str]) -> None:
        """Bump the generation, remember metadata keys for filters, and switch index kinds at the threshold."""
        row = registry_row(self.connection, self.name)
        if row is None:
            raise IndexNotFoundError(f"index {self.name!r} was deleted during a write")
        manifest = _manifest(row, self.connection)
        manifest.metadata_keys = sorted(set(manifest.metadata_keys or []) | set(metadata_keys))
        manifest.image_index = self._index_kind_for(self.images, manifest.image_index or "flat")
        manifest.text_index = self._index_kind_for(self.cases, manifest.text_index or "flat")
        write_registry(self.connection, self.name, manifest.to_json(), int(row["generation"]) + 1)
        self.manifest = manifest

    def _index_kind_for(self, collection: str, kind: str) -> str:
        """Exact search below the threshold, HNSW from it on: rebuild the collection's index when it crosses
        (an IVF index an earlier version made becomes HNSW at the next write)."""
        rows = self.connection.count(collection)
        wanted = "hnsw" if rows >= self.params.exact_threshold else "flat"
        if wanted != kind:
            client, admin = self.connection.client, self.connection.admin
            admin(f"releasing {collection}", client.release_collection, collection)
            admin(f"dropping the index of {collection}", client.drop_index, collection, "vector")
            admin(
                f"indexing {collection}",
                client.create_index,
                collection,
                vector_index(client, wanted, rows, self.params),
            )
            admin(f"loading {collection}", client.load_collection, collection)
        return wanted

    # -- writes ---------------------------------------------------------------------------------------
    def add_cases(
        self, items: Sequence[tuple[Case, Mapping[str, np.ndarray], np.ndarray]], *, replace: bool = False
    ) -> int:
        """Store (case, {image_id: vector}, report vector) items; DuplicateCaseError unless `replace`."""
        prepared = prepare_batch(items, self.manifest.image_dim, self.manifest.text_dim)
        if not prepared:
            return 0
        ids = [case.case_id for case, _, _ in prepared]
        with self._lock:
            stored = {r["case_id"] for r in self.connection.query(self.cases, text_list("case_id", ids), ["case_id"])}
            if stored and not replace:
                raise DuplicateCaseError(f"case {sorted(stored)[0]} is already in index {self.name}")
            client, call = self.connection.client, self.connection.call
            if stored:
                call("replacing cases", client.delete, self.cases, filter=text_list("case_id", stored))
            # Image rows of these ids: of replaced cases, or left by a write that was cut short.
            call("clearing image rows", client.delete, self.images, filter=text_list("case_id", ids))
            image_rows = [image_row(case, image, vector) for case, images, _ in prepared for image, vector in images]
            if image_rows:
                call("storing images", client.insert, self.images, image_rows)
            case_rows = [case_row(case, [i.image_id for i, _ in images], text) for case, images, text in prepared]
            call("storing cases", client.insert, self.cases, case_rows)
            keys = {
                str(k)
                for case, images, _ in prepared
                for layer in (case.metadata, *(i.metadata for i, _ in images))
                for k in layer
            }
            self._commit(keys)
        return len(prepared)

    def delete_case(self, case_id: str) -> bool:
        """Remove a case (its row first, so it vanishes from reads at once) and its images."""
        with self._lock:
            if not self.has_case(case_id):
                return False
            client, call = self.connection.client, self.connection.call
            call("deleting a case", client.delete, self.cases, filter=text_list("case_id", [case_id]))
            call("deleting its images", client.delete, self.images, filter=text_list("case_id", [case_id]))
            self._commit(())
            return True

    # -- reads ----------------------------------------------------------------------------------------
    def has_case(self, case_id: str) -> bool:
        return bool(self.connection.query(self.cases, text_list("case_id", [case_id]), ["pk"], limit=1))

    def case_ids(self) -> set[str]:
        return set(self.case_ids_in_order())

    def case_ids_in_order(self) -> list[str]:
        return [str(r["case_id"]) for r in self.connection.query_all(self.cases, "", ["case_id"])]

    def patient_of(self, case_id: str) -> str | None:
        rows = self.connection.query(
            self.cases, text_list("case_id", [case_id]), ["patient_id"], limit=1, guarantee=self.read_guarantee()
        )
        return none_if_empty(rows[0]["patient_id"]) if rows else None

    def case_ids_for_path(self, path: Path) -> set[str]:
        """Cases that store an image at exactly this path (the leakage guard's first check)."""
        rows = self.connection.query(
            self.images, text_list("path", [str(path)]), ["case_id"], guarantee=self.read_guarantee()
        )
        return {str(r["case_id"]) for r in rows} & self._reads.stored({str(r["case_id"]) for r in rows})

    def get_case(self, case_id: str) -> StoredCase | None:
        """The stored case, as `CaseStore.get_case` gives it: fields, report, metadata, images."""
        return self._reads.stored_case(case_id)

    def stored_cases(self) -> Iterator[Case]:
        for case_id in self.case_ids_in_order():
            stored = self.get_case(case_id)
            if stored is not None:
                yield stored.to_case()

    def image_rows_for(self, ids: Iterable[int]) -> list[ImageRow]:
        """Stored image rows for these image ids, in the given order (unknown ids and orphans skipped)."""
        return self._reads.image_rows(ids)

    def info(self) -> IndexInfo:
        """Counts, dimensions, encoders, index kinds and the generation, as `CaseStore.info`."""
        cases = self.connection.count(self.cases)
        image_only = self.connection.count(self.cases, "reported == false")
        return IndexInfo(
            name=self.name,
            path=self.location,
            backend="milvus",
            cases=cases,
            cases_with_report=cases - image_only,
            cases_image_only=image_only,
            images=self.connection.count(self.images),
            image_dim=self.manifest.image_dim,
            image_encoder=self.manifest.image_encoder,
            image_encoder_fingerprint=self.manifest.image_encoder_fingerprint,
            text_dim=self.manifest.text_dim,
            text_encoder=self.manifest.text_encoder,
            image_index=self.manifest.image_index or "flat",
            text_index=self.manifest.text_index or "flat",
            generation=self.generation(),
            flushed_generation=None,
            bytes_on_disk=None,
            files={},
            memory_bytes=None,
            created=self.manifest.created,
        )

    # -- search ---------------------------------------------------------------------------------------
    def search_ids(
        self,
        space: str,
        queries: np.ndarray,
        k: int,
        scope: SearchScope = EVERY_CASE,
    ) -> list[tuple[list[int], list[float]]]:
        """Top-k (row ids, scores) per query in `space`, best first (as `CaseStore.search_ids`)."""
        matrix = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if k <= 0 or len(matrix) == 0:
            return [([], []) for _ in range(len(matrix))]
        expression = filter_expression(space, scope, self.manifest.metadata_keys or [])
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = matrix / np.where(norms > 0, norms, 1)
        collection = self.images if space == "image" else self.cases
        kind = (self.manifest.image_index if space == "image" else self.manifest.text_index) or "flat"
        results = self.connection.read(
            collection,
            self.connection.client.search,
            data=matrix.tolist(),
            limit=min(int(k), MAX_TOP_K),
            filter=expression,
            search_params=search_params(kind, int(k), self.params),
            guarantee=self.read_guarantee(),
            anns_field="vector",
            output_fields=[],
        )
        return [([int(hit["id"]) for hit in hits], [float(hit["distance"]) for hit in hits]) for hits in results]

    def search_images(
        self,
        queries: np.ndarray,
        k: int,
        scope: SearchScope = EVERY_CASE,
    ) -> list[list[Hit]]:
        return self._reads.hits("image", self.search_ids("image", queries, k, scope))

    def search_texts(
        self,
        queries: np.ndarray,
        k: int,
        scope: SearchScope = EVERY_CASE,
    ) -> list[list[Hit]]:
        return self._reads.hits("text", self.search_ids("text", queries, k, scope))

    # -- stored rows and vectors (`reads.py`) -------------------------------------------------
    def image_hits(self, image_ids: Sequence[int], scores: Sequence[float]) -> dict[int, Hit]:
        return self._reads.image_hits(image_ids, scores)

    def image_ids_of_cases(self, case_row_ids: Sequence[int]) -> list[int]:
        return self._reads.image_ids_of_cases(case_row_ids)

    def sibling_image_ids(self, image_ids: Sequence[int]) -> list[int]:
        return self._reads.sibling_image_ids(image_ids)

    def rescoring_rows(
        self, image_ids: Sequence[int], *, text: bool
    ) -> tuple[list[str], np.ndarray, np.ndarray | None]:
        return self._reads.rescoring_rows(image_ids, text=text)

    def case_text_vectors(self, case_ids: Sequence[str]) -> np.ndarray:
        return self._reads.case_text_vectors(case_ids)


__all__ = ["CaseStoreUnavailableError", "MilvusCaseStore"]


def _manifest(row: Mapping[str, Any], connection: MilvusConnection) -> IndexManifest:
    """The manifest of a registry row, checked as a local one is (`IndexManifest.from_json`)."""
    return IndexManifest.from_json(dict(row["manifest"]), f"index {row['name']!r} on {connection.url}")


def _strong() -> int | None:
    return None
