"""The graph stays in step with the case store: through a `kill -9` of the graph server, writes a crash
cut short, and writes a snapshot-only server lost. Real embedded FalkorDB, real small index, real services.

Every wait is on readiness: the graph backend answers a query only once its restarted server is up.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from kgreport.indexing.archives.medpix import MedPixArchive
from kgreport.indexing.case_findings import FindingRecorder, GraphState, observed_text, store_identity
from kgreport.indexing.graph_sync import reconcile
from kgreport.knowledge.extraction.extractor import FindingExtractor
from kgreport.knowledge.graph import GraphBackend
from kgreport.knowledge.graph.falkordb_embedded import EmbeddedFalkorDB
from kgreport.retrieval.records import Case
from kgreport.usecases import ingest
from kgreport.usecases.services import Services
from kgreport.usecases.settings import Settings

pytestmark = pytest.mark.slow
DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
BUILT = 6  # cases the index is built with; the next demo cases are added one at a time

_EDGES = "MATCH (k:Case {index: $index, id: $id})-[r]->(:Concept) RETURN count(r) AS n"
_CASES = "MATCH (k:Case {index: $index}) RETURN k.id AS id"


class _Spy:
    """A graph backend that notes every query it is sent."""

    def __init__(self, graph: GraphBackend) -> None:
        self.graph, self.name, self.address = graph, graph.name, graph.address
        self.queries: list[str] = []

    def run(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        self.queries.append(query)
        return self.graph.run(query, params)

    def run_batched(self, query: str, rows: Any, batch_size: int = 2000) -> int:
        self.queries.append(query)
        return self.graph.run_batched(query, rows, batch_size)

    def create_indexes(self) -> None: ...

    def persist(self) -> None: ...

    def close(self) -> None: ...


def _services(data_dir: Path, extractor: FindingExtractor, like: Services | None = None) -> Services:
    services = Services(Settings(data_dir=data_dir))
    services.__dict__["finding_extractor"] = extractor  # the session's: built once
    if like is not None:  # the same encoders, loaded once
        services.__dict__["image_encoder"] = like.image_encoder
        services.__dict__["text_encoder"] = like.text_encoder
    return services


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory, extractor: FindingExtractor) -> Iterator[Services]:
    """Services over a fresh data dir: the embedded graph with its default durability (AOF always)."""
    services = _services(tmp_path_factory.mktemp("graph-sync"), extractor)
    yield services
    services.close()


@pytest.fixture(scope="module")
def extra_cases(extractor: FindingExtractor) -> list[Case]:
    """Demo cases after the first `BUILT`, those whose reports state findings first."""
    cases = [c for c in MedPixArchive(DEMO, "train", limit=BUILT + 6) if isinstance(c, Case)][BUILT:]
    return sorted(cases, key=lambda c: -len(extractor.extract(observed_text(c))))


def _build(services: Services, name: str) -> list[str]:
    ingest.ingest_archive(services, ingest.IngestRequest(name, DEMO, limit=BUILT))
    return sorted(services.open_store(name).case_ids())


def _add(services: Services, name: str, case: Case) -> None:
    images = [image.path for image in case.images]
    ingest.add_case(services, name, case.case_id, case.report.text(), images)


def _next_request(services: Services, name: str) -> set[str]:
    """What the next ingest request's recorder sees (taken under the index's write lock, as operations do)."""
    services.open_store(name)
    with services.stores.write_lock(name):
        return services.finding_recorder(name).recorded_case_ids()


def _kill_9(graph: GraphBackend) -> int:
    assert isinstance(graph, EmbeddedFalkorDB)
    pid = graph.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # the server is this process's child: reap it
    return pid


def test_reconcile_is_a_no_op_while_writes_keep_the_graph_in_step(
    services: Services, extractor: FindingExtractor, extra_cases: list[Case]
) -> None:
    built = _build(services, "steady")
    _add(services, "steady", extra_cases[0])
    store = services.open_store("steady")
    spy = _Spy(services.graph)
    result = reconcile(store, FindingRecorder(extractor, spy, "steady", store=store))
    assert result.generation == store.generation() and not result.wrote and not result.changed
    assert len(spy.queries) == 1 and spy.queries[0].startswith("MATCH (s:IndexState"), "one read, no write"

    # A delete through the operations removes the graph's findings itself, not through the recorder: the
    # next reconcile compares, changes nothing, records the generation; the one after is a no-op again.
    ingest.delete_cases(services, "steady", [built[0]])
    settled = reconcile(store, FindingRecorder(extractor, services.graph, "steady", store=store))
    assert settled.wrote and not settled.changed and settled.generation == store.generation()
    spy.queries.clear()
    again = reconcile(store, FindingRecorder(extractor, spy, "steady", store=store))
    assert not again.wrote and len(spy.queries) == 1

    # The recorder's own delete path keeps the graph in step by itself.
    store.delete_case(built[1])
    FindingRecorder(extractor, services.graph, "steady", store=store).forget([built[1]])
    spy.queries.clear()
    assert not reconcile(store, FindingRecorder(extractor, spy, "steady", store=store)).wrote
    assert _next_request(services, "steady") == store.case_ids()


def test_kill_9_of_the_graph_server_after_add_and_delete(services: Services, extra_cases: list[Case]) -> None:
    """The issue: add a case, delete another, kill -9 the graph server; the next request sees exactly the
    store's cases, the added one with its findings."""
    built = _build(services, "killed")
    added = extra_cases[0]
    _add(services, "killed", added)
    ingest.delete_cases(services, "killed", [built[0]])
    killed = _kill_9(services.graph)

    seen = _next_request(services, "killed")
    store = services.open_store("killed")
    assert seen == store.case_ids() == (set(built) - {built[0]}) | {added.case_id}
    assert services.graph.pid() not in (None, killed), "the server was restarted"
    edges = services.graph.run(_EDGES, {"index": "killed", "id": added.case_id})
    assert edges[0]["n"] > 0, "the added case kept its findings"


def test_reconcile_replays_a_write_cut_short_and_drops_an_uncommitted_one(
    services: Services, extractor: FindingExtractor, extra_cases: list[Case]
) -> None:
    built = _build(services, "cut")
    store = services.open_store("cut")
    graph = services.graph
    recorder = FindingRecorder(extractor, graph, "cut", store=store)
    # A process killed between its graph write and its store commit: the graph has a case the store lacks.
    uncommitted = extra_cases[1]
    recorder.record([uncommitted])
    # A process killed inside a findings write: the state says it was not written, its edges are gone.
    cut = max(built, key=lambda c: graph.run(_EDGES, {"index": "cut", "id": c})[0]["n"])
    assert graph.run(_EDGES, {"index": "cut", "id": cut})[0]["n"] > 0
    recorder.write_state(GraphState(store_identity(store), store.generation(), (cut,), written=False))
    graph.run("MATCH (k:Case {index: 'cut', id: $id})-[r]->() DELETE r", {"id": cut})

    result = reconcile(store, FindingRecorder(extractor, graph, "cut", store=store))
    assert result.removed == (uncommitted.case_id,) and result.replayed == (cut,) and result.added == ()
    assert graph.run(_EDGES, {"index": "cut", "id": cut})[0]["n"] > 0, "its findings are back"
    assert recorder.recorded_case_ids() == store.case_ids()
    assert not reconcile(store, recorder).wrote


def test_writes_a_snapshot_only_server_lost_are_replayed_from_the_store(
    tmp_path: Path, services: Services, extractor: FindingExtractor, extra_cases: list[Case]
) -> None:
    """The issue as it was before AOF: the server restarts from its last snapshot, without the added
    case and with the deleted one; the next request's reconcile puts the store's cases back."""
    lossy = _services(tmp_path / "kg", extractor, like=services)
    lossy.__dict__["graph"] = EmbeddedFalkorDB(tmp_path / "kg" / "graph", appendfsync=None)
    try:
        built = _build(lossy, "lossy")
        lossy.graph.persist()  # the snapshot the server will come back to
        added = extra_cases[0]
        _add(lossy, "lossy", added)
        ingest.delete_cases(lossy, "lossy", [built[0]])
        _kill_9(lossy.graph)

        restarted = {r["id"] for r in lossy.graph.run(_CASES, {"index": "lossy"})}
        assert restarted == set(built), "the server lost the add and the delete"
        store = lossy.open_store("lossy")
        assert _next_request(lossy, "lossy") == store.case_ids() == (set(built) - {built[0]}) | {added.case_id}
        assert lossy.graph.run(_EDGES, {"index": "lossy", "id": added.case_id})[0]["n"] > 0
        assert not reconcile(store, FindingRecorder(extractor, lossy.graph, "lossy", store=store)).wrote
    finally:
        lossy.close()
