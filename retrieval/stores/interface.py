"""What ingest, search and the report writer need of a case store, whichever backend holds it.

`retrieval.stores.local.store.CaseStore` (FAISS + SQLite in a folder) and
`retrieval.stores.milvus.store.MilvusCaseStore` (collections on a Milvus server) both provide it, with the
same results for the same cases (`tests/retrieval/test_milvus_store.py` checks them side by side). Row ids
are the backend's own: they are only ever handed back to the store that gave them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

import numpy as np

from kgreport.retrieval.manifest import IndexManifest
from kgreport.retrieval.records import Case, Hit, ImageRow, IndexInfo, StoredCase
from kgreport.retrieval.stores.scope import EVERY_CASE, SearchScope


class EncoderLabel(Protocol):
    """What a new store records of an encoder: its name and vector size (and, where it has one, its
    weights' `fingerprint`, read with `getattr`), so an index is never searched with another encoder."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...


class CaseStoreInterface(Protocol):
    manifest: IndexManifest

    @property
    def name(self) -> str: ...

    @property
    def location(self) -> str: ...

    def generation(self) -> int: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def replaced_on_disk(self) -> bool: ...

    def read_point(self) -> AbstractContextManager[None]:
        """Reads in the block all see the store at one point: Milvus gives them one read guarantee (one
        look at the write lease, not one per read); the local store has nothing to pin."""
        ...

    def add_cases(
        self, items: Sequence[tuple[Case, Mapping[str, np.ndarray], np.ndarray]], *, replace: bool = False
    ) -> int: ...

    def delete_case(self, case_id: str) -> bool: ...

    def has_case(self, case_id: str) -> bool: ...

    def case_ids(self) -> set[str]: ...

    def patient_of(self, case_id: str) -> str | None: ...

    def case_ids_for_path(self, path: Path) -> set[str]: ...

    def get_case(self, case_id: str) -> StoredCase | None: ...

    def stored_cases(self) -> Iterator[Case]: ...

    def image_rows_for(self, ids: Iterable[int]) -> list[ImageRow]: ...

    def info(self) -> IndexInfo: ...

    def search_ids(
        self,
        space: str,
        queries: np.ndarray,
        k: int,
        scope: SearchScope = EVERY_CASE,
    ) -> list[tuple[list[int], list[float]]]: ...

    def search_images(
        self,
        queries: np.ndarray,
        k: int,
        scope: SearchScope = EVERY_CASE,
    ) -> list[list[Hit]]: ...

    def image_ids_of_cases(self, case_row_ids: Sequence[int]) -> list[int]: ...

    def sibling_image_ids(self, image_ids: Sequence[int]) -> list[int]: ...

    def rescoring_rows(
        self, image_ids: Sequence[int], *, text: bool
    ) -> tuple[list[str], np.ndarray, np.ndarray | None]: ...

    def image_hits(self, image_ids: Sequence[int], scores: Sequence[float]) -> dict[int, Hit]: ...

    def case_text_vectors(self, case_ids: Sequence[str]) -> np.ndarray: ...
