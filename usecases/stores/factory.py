"""Where the indexes live, chosen by `KGREPORT_CASE_STORE`: one interface over both case-store backends.

- `LocalIndexStores` (the default): each index a folder of SQLite + FAISS files under the data dir, its
  writers excluded by a file lock. One machine (several processes on it may share the folder).
- `MilvusIndexStores` (`milvus://HOST:PORT`): each index a pair of Milvus collections, shared by every
  replica; writers excluded across machines by a lease in the shared graph (`usecases.stores.write_lease`),
  which also tells each search the last write it must see (so it need not wait for Milvus's time tick).

Both hand out stores with the same methods (`retrieval.stores.local.store.CaseStore`,
`retrieval.stores.milvus.store.MilvusCaseStore`), so ingest, search, the service and the report writer never
ask which one they have.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from kgreport.knowledge.graph import GraphBackend
from kgreport.retrieval.config import IndexParams
from kgreport.retrieval.stores.interface import EncoderLabel
from kgreport.retrieval.stores.local.store import CaseStore
from kgreport.retrieval.stores.local.write_lock import index_busy, index_write_lock
from kgreport.retrieval.stores.milvus.connection import MilvusConnection, MilvusSettings
from kgreport.retrieval.stores.milvus.store import MilvusCaseStore
from kgreport.usecases.settings import STAGING_SUFFIX, Settings
from kgreport.usecases.stores.write_lease import lease_busy, read_guarantee, write_lease

log = logging.getLogger(__name__)
GRAPH_RETRY_S = 5.0  # after the graph failed to answer a search's lease read, strong reads for this long

AnyStore = CaseStore | MilvusCaseStore  # both are `retrieval.stores.interface.CaseStoreInterface`


class IndexStores(Protocol):
    """What the API layer asks of a backend, by index name."""

    kind: str

    def exists(self, name: str) -> bool: ...

    def names(self) -> list[str]: ...

    def open(self, name: str, params: IndexParams) -> AnyStore: ...

    def create(
        self, name: str, image_encoder: EncoderLabel, text_encoder: EncoderLabel, params: IndexParams
    ) -> AnyStore: ...

    def drop(self, name: str) -> None: ...

    def write_lock(self, name: str) -> AbstractContextManager[None]: ...

    def busy(self, name: str) -> str | None: ...

    def create_staging(
        self, name: str, image_encoder: EncoderLabel, text_encoder: EncoderLabel, params: IndexParams
    ) -> AnyStore:
        """A new, empty copy of `name` to rebuild into (what an earlier rebuild left there is removed)."""
        ...

    def swap_in_staging(self, name: str) -> None:
        """Make the finished staging copy the index `name`, replacing the old one."""
        ...

    def drop_staging(self, name: str) -> None: ...

    def describe(self) -> str: ...


class LocalIndexStores:
    """Indexes as folders under `<data_dir>/indexes`."""

    kind = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def exists(self, name: str) -> bool:
        return CaseStore.exists(self.settings.index_dir(name))

    def names(self) -> list[str]:
        return self.settings.index_names()

    def open(self, name: str, params: IndexParams) -> CaseStore:
        return CaseStore.open(self.settings.index_dir(name), params=params)

    def create(
        self, name: str, image_encoder: EncoderLabel, text_encoder: EncoderLabel, params: IndexParams
    ) -> CaseStore:
        return CaseStore.create_for(self.settings.index_dir(name), image_encoder, text_encoder, params=params)

    def drop(self, name: str) -> None:
        shutil.rmtree(self.settings.index_dir(name))

    def write_lock(self, name: str) -> AbstractContextManager[None]:
        return index_write_lock(self.settings.index_dir(name), name)

    def busy(self, name: str) -> str | None:
        return index_busy(self.settings.index_dir(name), name)

    def _staging(self, name: str) -> Path:
        root = self.settings.index_dir(name)
        return root.with_name(f"{root.name}{STAGING_SUFFIX}")  # a name no index can have

    def create_staging(
        self, name: str, image_encoder: EncoderLabel, text_encoder: EncoderLabel, params: IndexParams
    ) -> CaseStore:
        self.drop_staging(name)
        return CaseStore.create_for(self._staging(name), image_encoder, text_encoder, params=params)

    def swap_in_staging(self, name: str) -> None:
        root = self.settings.index_dir(name)
        replaced = root.with_name(f".{root.name}.replaced")
        shutil.rmtree(replaced, ignore_errors=True)
        os.rename(root, replaced)  # two renames, microseconds apart; the old copy goes only after both
        os.rename(self._staging(name), root)
        shutil.rmtree(replaced, ignore_errors=True)

    def drop_staging(self, name: str) -> None:
        shutil.rmtree(self._staging(name), ignore_errors=True)

    def describe(self) -> str:
        return "local (FAISS + SQLite in the data dir)"


class MilvusIndexStores:
    """Indexes as collections on one Milvus server, written under leases in the shared graph."""

    kind = "milvus"

    def __init__(self, settings: Settings, graph: Callable[[], GraphBackend]) -> None:
        self.settings = settings
        self._graph = graph  # opened on first use: reads work without it (strong, see `read_guarantee`)
        self._graph_down_until = 0.0
        self.connection = MilvusConnection(
            MilvusSettings(
                settings.case_store,
                token=settings.milvus_token.get_secret_value(),
                user=settings.milvus_user,
                password=settings.milvus_password.get_secret_value(),
                timeout=settings.milvus_timeout,
                consistency=settings.milvus_consistency,
            )
        )

    def exists(self, name: str) -> bool:
        self.settings.index_dir(name)  # the index-name rule, as for local indexes
        return MilvusCaseStore.exists(self.connection, name)

    def names(self) -> list[str]:
        return MilvusCaseStore.names(self.connection)

    def open(self, name: str, params: IndexParams) -> MilvusCaseStore:
        self.settings.index_dir(name)
        return MilvusCaseStore.open(self.connection, name, params, self._guarantee_of(name))

    def create(
        self, name: str, image_encoder: EncoderLabel, text_encoder: EncoderLabel, params: IndexParams
    ) -> MilvusCaseStore:
        self.settings.index_dir(name)
        return MilvusCaseStore.create_for(
            self.connection, name, image_encoder, text_encoder, params, self._guarantee_of(name)
        )

    def drop(self, name: str) -> None:
        MilvusCaseStore.drop(self.connection, name)

    def write_lock(self, name: str) -> AbstractContextManager[None]:
        written = lambda: self.connection.last_write_ts  # noqa: E731  (read when the lease is let go)
        return write_lease(self._graph(), name, self.settings.write_lease_seconds, written)

    def _guarantee_of(self, name: str) -> Callable[[], int | None]:
        """What each search of `name` must see (`write_lease.read_guarantee`); strong while the graph is away."""

        def guarantee() -> int | None:
            if time.monotonic() < self._graph_down_until:
                return None
            try:
                return read_guarantee(self._graph(), name)
            except Exception as err:  # any failure of the graph: a strong read is always correct
                log.warning(
                    "graph did not answer a lease read (%s); Milvus reads are strong for %.0f s", err, GRAPH_RETRY_S
                )
                self._graph_down_until = time.monotonic() + GRAPH_RETRY_S
                return None

        return guarantee

    def busy(self, name: str) -> str | None:
        return lease_busy(self._graph(), name)

    def create_staging(
        self, name: str, image_encoder: EncoderLabel, text_encoder: EncoderLabel, params: IndexParams
    ) -> MilvusCaseStore:
        self.drop_staging(name)
        return MilvusCaseStore.create_for(
            self.connection, f"{name}{STAGING_SUFFIX}", image_encoder, text_encoder, params
        )

    def swap_in_staging(self, name: str) -> None:
        MilvusCaseStore.swap_in(self.connection, f"{name}{STAGING_SUFFIX}", name)

    def drop_staging(self, name: str) -> None:
        MilvusCaseStore.drop(self.connection, f"{name}{STAGING_SUFFIX}")

    def describe(self) -> str:
        return f"milvus at {self.settings.case_store} (Milvus {self.connection.ping()})"


def index_stores(settings: Settings, graph: Callable[[], GraphBackend]) -> IndexStores:
    """The backend `KGREPORT_CASE_STORE` names: empty for local folders, or milvus://HOST:PORT."""
    if settings.case_store:
        return MilvusIndexStores(settings, graph)
    return LocalIndexStores(settings)
