"""The write lease in each graph backend: one holder under a race, and the read guarantee it records."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kgreport.knowledge.graph import GraphBackend
from kgreport.retrieval.stores.local.write_lock import IndexBusyError
from kgreport.usecases.stores import write_lease
from kgreport.usecases.stores.write_lease import TAKE, read_guarantee
from tests.knowledge.conftest import BACKENDS, open_backend


@pytest.fixture(params=BACKENDS)
def graph(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GraphBackend]:
    backend = open_backend(request.param, tmp_path / "data", request)
    yield backend
    backend.run("MATCH (l:WriteLease) DETACH DELETE l")
    backend.close()


def test_of_many_racing_takes_of_a_new_lease_one_wins(graph: GraphBackend) -> None:
    write_lease._ensure_constraint(graph)  # as the first take does (Neo4j: the uniqueness constraint)
    racers, start = 8, threading.Barrier(8)
    answers: list[bool] = []

    def take(n: int) -> None:
        start.wait()
        now = time.time()
        rows = graph.run(TAKE, {"index": "raced", "holder": f"replica-{n}", "now": now, "until": now + 30})
        answers.append(bool(rows[0]["taken"]))

    threads = [threading.Thread(target=take, args=(n,)) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [False] * (racers - 1) + [True]
    assert graph.run("MATCH (l:WriteLease {index: 'raced'}) RETURN count(l) AS n")[0]["n"] == 1


def test_the_read_guarantee_is_the_last_finished_write(graph: GraphBackend) -> None:
    assert read_guarantee(graph, "idx") is None  # never written under a lease: strong reads
    with write_lease.write_lease(graph, "idx", 30, written=lambda: 123):
        assert read_guarantee(graph, "idx") is None  # this process is writing it
        with pytest.raises(IndexBusyError), write_lease.write_lease(graph, "idx", 30):
            pass
    assert read_guarantee(graph, "idx") == 123
    with write_lease.write_lease(graph, "idx", 30, written=lambda: 50):  # an older timestamp never wins
        pass
    assert read_guarantee(graph, "idx") == 123
    now = time.time()
    graph.run(TAKE, {"index": "idx", "holder": "another-replica", "now": now, "until": now + 30})
    assert read_guarantee(graph, "idx") is None  # another replica is writing: strong reads
    graph.run("MATCH (l:WriteLease {index: 'idx'}) SET l.expires = 0.0")  # it died: its lease ran out
    assert read_guarantee(graph, "idx") == 123
