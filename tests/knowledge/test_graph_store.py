"""The graph layer against a real embedded FalkorDB (and Neo4j when KGREPORT_NEO4J_URI is given)."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from kgreport.knowledge.graph import GraphBackend, GraphUnavailableError, open_graph
from kgreport.knowledge.graph.falkordb_embedded import EmbeddedFalkorDB


@pytest.fixture
def graph(empty_graph: GraphBackend) -> GraphBackend:
    return empty_graph


def test_batched_writes_and_parameterised_reads(graph: GraphBackend) -> None:
    rows = [{"id": f"RID{i}", "name": f"concept {i}"} for i in range(5000)]
    assert (
        graph.run_batched(
            "UNWIND $rows AS row MERGE (c:Concept {id: row.id}) SET c.name = row.name",
            rows,
            batch_size=1000,
        )
        == 5000
    )
    found = graph.run("MATCH (c:Concept {id: $id}) RETURN c.name AS name", {"id": "RID42"})
    assert found == [{"name": "concept 42"}]
    graph.create_indexes()  # idempotent
    assert graph.run("MATCH (c:Concept) RETURN count(c) AS n")[0]["n"] == 5000


@pytest.mark.parametrize(
    "nasty", ['O\'Brien \\ "quoted"', "x'}) DETACH DELETE (n) //", "MATCH (n) RETURN n", "\u0000\ud7ff emoji 🙂", "$id"]
)
def test_values_are_data_never_query_text(graph: GraphBackend, nasty: str) -> None:
    graph.run("CREATE (c:Concept {id: $id, name: $name})", {"id": "RIDX", "name": nasty})
    graph.run("CREATE (c:Concept {id: 'RIDY', name: 'kept'})")
    # FalkorDB's client carries parameters in a text header, so NUL characters are dropped on the way in.
    stored = nasty.replace("\x00", "") if graph.name.startswith("falkordb") else nasty
    assert graph.run("MATCH (c:Concept {id: 'RIDX'}) RETURN c.name AS name") == [{"name": stored}]
    assert graph.run("MATCH (c:Concept {name: $name}) RETURN c.id AS id", {"name": nasty}) == [{"id": "RIDX"}]
    assert graph.run("MATCH (c:Concept {id: 'RIDY'}) RETURN c.name AS name") == [{"name": "kept"}]


def test_embedded_server_persists_across_restarts(tmp_path: Path) -> None:
    first = EmbeddedFalkorDB(tmp_path / "graph")
    first.run("CREATE (:Concept {id: 'RID1', name: 'lung'})")
    first.close()
    assert not first.alive()
    second = EmbeddedFalkorDB(tmp_path / "graph")
    assert second.run("MATCH (c:Concept) RETURN c.name AS name") == [{"name": "lung"}]
    second.close()


def test_embedded_server_is_restarted_if_it_died(tmp_path: Path) -> None:
    graph = EmbeddedFalkorDB(tmp_path / "graph")
    graph.run("CREATE (:Concept {id: 'RID1', name: 'liver'})")
    graph.persist()
    pid = graph.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert graph.run("MATCH (c:Concept) RETURN c.name AS name") == [{"name": "liver"}]
    assert graph.pid() not in (None, pid)
    graph.close()


def test_socket_stays_short_for_deep_data_dirs(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    graph = EmbeddedFalkorDB(deep)
    assert len(str(graph.socket)) <= 100
    assert graph.run("RETURN 1 AS one") == [{"one": 1}]
    graph.close()


def test_a_server_that_cannot_start_names_backend_and_address(tmp_path: Path) -> None:
    blocker = tmp_path / "graph"
    blocker.write_text("a file where the graph folder should be")
    graph = EmbeddedFalkorDB(blocker)
    with pytest.raises((GraphUnavailableError, OSError), match="graph"):
        graph.run("RETURN 1")


def test_a_socket_that_refuses_connections_is_waited_on_then_named(tmp_path: Path) -> None:
    """The socket file can exist before the server accepts on it (a loaded machine widens the gap): the wait
    retries until its deadline, then fails naming the address and the log instead of ConnectionRefusedError."""
    graph = EmbeddedFalkorDB(tmp_path / "graph")
    graph.folder.mkdir(parents=True)
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound.bind(str(graph.socket))  # bound, never listening: every connect is refused
    try:
        started = time.monotonic()
        with pytest.raises(GraphUnavailableError, match=r"did not answer .*falkordb\.log"):
            graph._wait_until_loaded(time.monotonic() + 0.5)
        assert 0.5 <= time.monotonic() - started < 10, "it retried until the deadline, then gave up"
    finally:
        bound.close()


def test_unreachable_neo4j_names_backend_and_address() -> None:
    with pytest.raises(GraphUnavailableError, match=r"neo4j graph at bolt://127.0.0.1:1 is unavailable"):
        open_graph(".", neo4j_uri="bolt://127.0.0.1:1", neo4j_password="x")


def test_a_second_process_shares_the_server_and_takes_over_an_orphan(tmp_path: Path) -> None:
    """One server per data dir: used side by side, and taken over when the process that started it dies."""
    import subprocess
    import sys
    import time

    from kgreport.knowledge.processes import process_alive

    folder = tmp_path / "graph"
    code = (
        "import sys, time\nfrom kgreport.knowledge.graph.falkordb_embedded import EmbeddedFalkorDB\n"
        "g = EmbeddedFalkorDB(sys.argv[1])\ng.run(\"CREATE (:Concept {id: 'RID7'})\")\n"
        "print(g.pid(), flush=True)\ntime.sleep(120)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    starter = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=repo, stdout=subprocess.PIPE, text=True)
    assert starter.stdout is not None
    server = int(starter.stdout.readline())
    sharer = EmbeddedFalkorDB(folder)
    assert sharer.run("MATCH (c:Concept) RETURN c.id AS id") == [{"id": "RID7"}]
    assert sharer.pid() == server
    sharer.close()  # it did not start the server: it leaves it running for its owner
    assert process_alive(server)
    starter.kill()
    starter.wait()
    heir = EmbeddedFalkorDB(folder)
    assert heir.run("MATCH (c:Concept) RETURN c.id AS id") == [{"id": "RID7"}]
    assert heir.pid() == server, "the orphaned server is reused, not doubled"
    heir.close()  # the owner is gone, so the heir stops it
    deadline = time.monotonic() + 10
    while process_alive(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(server)


def _kill_9(graph: EmbeddedFalkorDB) -> int:
    pid = graph.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # ours: reap it, so nothing is left of it when the next query comes
    return pid


def test_acknowledged_writes_survive_kill_9_without_a_snapshot(tmp_path: Path) -> None:
    """Every acknowledged write is in the append-only file (appendfsync always): no SAVE, no clean stop."""
    graph = EmbeddedFalkorDB(tmp_path / "graph")
    graph.run("UNWIND range(1, 50) AS i CREATE (:Concept {id: 'RID' + toString(i)})")
    graph.run("MATCH (c:Concept {id: 'RID7'}) DELETE c")
    killed = _kill_9(graph)
    assert graph.run("MATCH (c:Concept) RETURN count(c) AS n") == [{"n": 49}]
    assert graph.pid() not in (None, killed)
    graph.close()


def test_a_snapshot_only_graph_keeps_its_data_when_aof_is_turned_on(tmp_path: Path) -> None:
    """A data dir written before AOF (graph.rdb only): redis told `appendonly yes` with no AOF would start
    empty; the server loads the snapshot first, then writes the AOF from it."""
    folder = tmp_path / "graph"
    old = EmbeddedFalkorDB(folder, appendfsync=None)
    old.run("UNWIND range(1, 20) AS i CREATE (:Concept {id: 'RID' + toString(i)})")
    old.close()
    assert (folder / "graph.rdb").is_file() and not (folder / "appendonlydir").exists()

    graph = EmbeddedFalkorDB(folder)
    assert graph.run("MATCH (c:Concept) RETURN count(c) AS n") == [{"n": 20}]
    assert graph.aof_manifest.is_file()
    graph.run("CREATE (:Concept {id: 'RID21'})")
    _kill_9(graph)  # the restart reads the AOF: the snapshot's nodes and the write after it
    assert graph.run("MATCH (c:Concept) RETURN count(c) AS n") == [{"n": 21}]
    graph.close()
    again = EmbeddedFalkorDB(folder)  # a clean start from the AOF
    assert again.run("MATCH (c:Concept) RETURN count(c) AS n") == [{"n": 21}]
    again.close()


def test_a_running_snapshot_only_server_gets_aof_when_shared(tmp_path: Path) -> None:
    """A server started without AOF (an older build, say) that another handle finds running is switched to
    AOF by it before it is used, so writes through either survive a kill -9."""
    folder = tmp_path / "graph"
    first = EmbeddedFalkorDB(folder, appendfsync=None)
    first.run("CREATE (:Concept {id: 'RID1'})")
    second = EmbeddedFalkorDB(folder)
    second.run("CREATE (:Concept {id: 'RID2'})")
    assert second.pid() == first.pid() and second.aof_manifest.is_file()
    second.close()  # not its server: it only disconnects
    _kill_9(first)  # restarted by the snapshot-only handle, it still starts from the AOF that is there now
    assert {r["id"] for r in first.run("MATCH (c:Concept) RETURN c.id AS id")} == {"RID1", "RID2"}
    first.close()
