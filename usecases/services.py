"""Models and stores, loaded once per process and shared by the CLI commands and the service."""

from __future__ import annotations

import logging
import os
import threading
from functools import cached_property
from pathlib import Path

import torch

from kgreport.errors import Conflict
from kgreport.indexing.case_findings import FindingRecorder
from kgreport.indexing.graph_sync import reconcile
from kgreport.knowledge.extraction.extractor import FindingExtractor
from kgreport.knowledge.extraction.lexicon import build_lexicon
from kgreport.knowledge.graph import GraphBackend, open_graph
from kgreport.knowledge.ontology.diagnosis_loader import ensure_diagnosis_kb
from kgreport.knowledge.ontology.diagnosis_ranking import DiagnosisRanker
from kgreport.knowledge.ontology.loader import ensure_ontology
from kgreport.retrieval import faiss_gpu
from kgreport.retrieval.config import IndexParams
from kgreport.retrieval.device import describe, resolve_device
from kgreport.retrieval.encoders.coalescing import QueryCoalescers
from kgreport.retrieval.encoders.image_encoder import CTEncoder, OpenClipEncoder, load_image_encoder
from kgreport.retrieval.encoders.text_encoder import TextEncoder
from kgreport.retrieval.query_cache import QueryCache
from kgreport.retrieval.search import CaseSearcher
from kgreport.retrieval.stores.local.store import IndexNotFoundError
from kgreport.usecases.settings import Settings
from kgreport.usecases.stores.factory import AnyStore, IndexStores, index_stores

log = logging.getLogger(__name__)


class EncoderMismatchError(Conflict, ValueError):
    """An index whose vectors were made by other encoders than the loaded ones."""

    code = "encoder_mismatch"


class Services:
    """Lazy, cached access to encoders and open indexes."""

    def __init__(self, settings: Settings) -> None:
        # No model hub at run time: every load is local (`local_files_only`), and these keep any library
        # call we do not see from trying the network. Set when services are made, not when a module is imported.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.settings = settings
        self._stores: dict[str, AnyStore] = {}
        self._stores_lock = threading.RLock()  # the service opens stores from many request threads

    @cached_property
    def image_encoder(self) -> CTEncoder | OpenClipEncoder:
        path = Path(self.settings.image_encoder) if self.settings.image_encoder else self.settings.default_image_encoder
        return load_image_encoder(path, device=self.device)

    @cached_property
    def text_encoder(self) -> TextEncoder:
        return TextEncoder(self.settings.text_encoder or None, device=str(self.device))

    @cached_property
    def device(self) -> torch.device:
        """Where the encoders and the report writer run (`KGREPORT_DEVICE`); said once in the log."""
        device = resolve_device(self.settings.device)
        log.info(
            "device: %s, vector search on %s (KGREPORT_DEVICE=%s)",
            describe(device),
            faiss_gpu.describe(self.settings.device),
            self.settings.device,
        )
        return device

    @property
    def llm_cache_dir(self) -> Path:
        """Where the packaged GGUF LLM is kept once converted to safetensors."""
        return self.settings.data_dir / "cache" / "llm"

    @property
    def index_params(self) -> IndexParams:
        return self.settings.index_params()

    @cached_property
    def stores(self) -> IndexStores:
        """Where indexes live (`KGREPORT_CASE_STORE`): folders in the data dir, or a Milvus server."""
        stores = index_stores(self.settings, lambda: self.graph)
        log.info("case store: %s", stores.describe())
        return stores

    def open_store(self, name: str, *, create: bool = False) -> AnyStore:
        """The named index; with `create`, a new one sized for the loaded encoders if it does not exist."""
        with self._stores_lock:
            return self._open_store(name, create)

    def _open_store(self, name: str, create: bool) -> AnyStore:
        if name in self._stores:
            if not self._stores[name].replaced_on_disk():
                return self._stores[name]
            # Rebuilt by another process: open the new one. The old handle is not closed under a search
            # that may still hold it; it closes when the last one lets it go.
            del self._stores[name]
        self.settings.index_dir(name)  # the index-name rule, before any backend sees the name
        store: AnyStore
        if not self.stores.exists(name):
            if not create:
                raise IndexNotFoundError(
                    f"index {name!r} not found (build it with `kgreport index build ARCHIVE --name {name}`)"
                )
            store = self.stores.create(name, self.image_encoder, self.text_encoder, self.index_params)
        else:
            store = self.stores.open(name, self.index_params)
        self._check_dims(name, store)
        self._stores[name] = store
        return store

    def close_store(self, name: str) -> None:
        """Close the named index if it is open (before it is deleted)."""
        with self._stores_lock:
            store = self._stores.pop(name, None)
        if store is not None:
            store.close()

    def _check_dims(self, name: str, store: AnyStore) -> None:
        """Refuse an index whose vectors the loaded encoders did not make: other dimensions, or an image
        encoder whose weights differ from the ones the index was built with (same size, other space)."""
        manifest = store.manifest
        rebuild = f"`kgreport index rebuild {name} --encoder DIR`, or set KGREPORT_IMAGE_ENCODER to its encoder"
        if manifest.image_dim != self.image_encoder.dim or manifest.text_dim != self.text_encoder.dim:
            raise EncoderMismatchError(
                f"index {name!r} ({store.location}) holds {manifest.image_dim}-d image / {manifest.text_dim}-d "
                f"text vectors but the loaded encoders give {self.image_encoder.dim}-d ({self.image_encoder.name}) "
                f"/ {self.text_encoder.dim}-d ({self.text_encoder.name}); {rebuild}"
            )
        built_with = manifest.image_encoder_fingerprint
        loaded = getattr(self.image_encoder, "fingerprint", None)
        if not built_with and loaded:
            log.warning(
                "index %r was built before indexes recorded their encoder's weights: if the encoder has changed "
                "since, %s",
                name,
                rebuild,
            )
        if built_with and loaded and built_with != loaded:
            raise EncoderMismatchError(
                f"index {name!r} ({store.location}) was built with image encoder {manifest.image_encoder!r} "
                f"(weights {built_with}); the loaded one is {self.image_encoder.name!r} (weights {loaded}): same "
                f"{self.image_encoder.dim}-d size, another space; {rebuild}"
            )

    def searcher(self, name: str) -> CaseSearcher:
        config = self.settings.search_config()
        return CaseSearcher(
            self.open_store(name),
            self.image_encoder,
            self.text_encoder,
            config,
            cache=self.query_cache,
            coalescers=self.query_coalescers if config.coalesce else None,
        )

    @cached_property
    def query_coalescers(self) -> QueryCoalescers:
        """One model thread per encoder, shared by every index's searcher (see `coalescing.py`)."""
        return QueryCoalescers(self.image_encoder, self.text_encoder)

    @cached_property
    def query_cache(self) -> QueryCache:
        """Query embeddings shared by every index's searcher (same encoders, same settings)."""
        return QueryCache(self.settings.query_cache_size)

    @cached_property
    def graph(self) -> GraphBackend:
        s = self.settings
        return open_graph(
            s.data_dir,
            neo4j_uri=s.neo4j_uri or None,
            neo4j_user=s.neo4j_user,
            neo4j_password=s.neo4j_password,
            neo4j_database=s.neo4j_database,
            falkordb_url=s.falkordb_url or None,
            falkordb_password=s.falkordb_password.get_secret_value(),
        )

    @cached_property
    def ontology_graph(self) -> GraphBackend:
        """The graph, with the bundled ontology loaded into it first if it is not there yet (checked once)."""
        folder = self.settings.ontology_dir
        ensure_ontology(self.graph, folder / "radlex.csv.gz", folder / "finding_models.jsonl.gz")
        return self.graph

    def finding_recorder(self, index: str) -> FindingRecorder:
        """Writes the findings of `index`'s cases into the ontology graph during ingest. The graph is first
        brought in step with the index's store (`indexing.graph_sync.reconcile`): one small query when it
        already is, as in normal operation; after a crash of this process or of the graph server (whose
        restart the query itself triggers), the cases the graph lost or kept too many are replayed.
        Call it with the index's write lock held, as `usecases.ingest` does."""
        store = self.open_store(index)
        recorder = FindingRecorder(self.finding_extractor, self.ontology_graph, index, store=store)
        reconcile(store, recorder)
        return recorder

    @cached_property
    def diagnosis_ranker(self) -> DiagnosisRanker:
        """The finding → diagnosis knowledge base, read from the graph once (loaded into it first if missing)."""
        return DiagnosisRanker(ensure_diagnosis_kb(self.ontology_graph))

    @cached_property
    def finding_extractor(self) -> FindingExtractor:
        folder = self.settings.ontology_dir
        lexicon = build_lexicon(folder / "radlex.csv.gz", folder / "finding_models.jsonl.gz")
        return FindingExtractor(lexicon, self.settings.data_dir / "cache", base=self.settings.nlp_base)

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()
        if "graph" in self.__dict__:
            self.graph.close()
