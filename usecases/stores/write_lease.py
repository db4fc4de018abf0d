"""A write lease on one index, kept in the graph that every replica shares: one writer across machines.

On one machine, writers of an index exclude each other with a file lock (`retrieval.stores.local.write_lock`). With
the case store on Milvus, replicas on several machines write the same index, so the lock lives where
they all look: a `(:WriteLease {index})` node in the shared graph (a FalkorDB server, or Neo4j). Taking
it is one Cypher statement that compares and sets, which the graph server runs atomically: the lease is
free when nobody holds it, when this holder holds it, or when its holder let it expire.

On Neo4j two replicas racing to take a new lease must not both make a node: a uniqueness constraint on
`WriteLease.index` (made before the first take) makes MERGE take that key's lock, so the second waits and
then matches the first's node. And two takes of one node must not both read it as free: TAKE writes the
node (`l.asked`) before it reads the holder, so the second waits for the first's write lock and then
reads what the first set (Neo4j's documented lost-update guard). FalkorDB runs one query at a time, so
both hold there already.

When a holder lets go it records on the node the Milvus timestamp of its last write (`written`): a search
of the index then asks Milvus for that write and no later (`read_guarantee`), so it waits for no time tick
and still sees every finished write, through any replica. While a lease is held, reads are strong.

A holder renews its lease every third of `seconds` from a background thread, so a replica that dies
mid-build (`kill -9`) frees its indexes after at most `seconds`; the next build of that index, through
any replica, then takes the lease and resumes where the dead one stopped (the store keeps every
committed case). Expiry compares wall clocks, so replicas must keep theirs in step (NTP), well within
`seconds`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

from kgreport.knowledge.graph import GraphBackend
from kgreport.retrieval.stores.local.write_lock import IndexBusyError

log = logging.getLogger(__name__)

TAKE = """
MERGE (l:WriteLease {index: $index})
ON CREATE SET l.holder = '', l.expires = 0.0
SET l.asked = $now
WITH l, (l.holder = '' OR l.holder = $holder OR l.expires < $now) AS free
SET l.holder = CASE WHEN free THEN $holder ELSE l.holder END,
    l.expires = CASE WHEN free THEN $until ELSE l.expires END
RETURN free AS taken, l.holder AS holder, l.expires AS expires
"""
RENEW = """
MATCH (l:WriteLease {index: $index}) WHERE l.holder = $holder
SET l.expires = $until
RETURN l.holder AS holder
"""
LET_GO = """
MATCH (l:WriteLease {index: $index}) WHERE l.holder = $holder
SET l.holder = '', l.expires = 0.0,
    l.written = CASE WHEN l.written IS NULL OR $written > l.written THEN $written ELSE l.written END
"""
PEEK = "MATCH (l:WriteLease {index: $index}) RETURN l.holder AS holder, l.expires AS expires, l.written AS written"
NEO4J_CONSTRAINT = "CREATE CONSTRAINT write_lease_index IF NOT EXISTS FOR (l:WriteLease) REQUIRE l.index IS UNIQUE"


@cache
def this_process() -> str:
    """Who holds a lease: host, process id and a random part (a process id alone is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _busy(index: str, holder: str, expires: float) -> IndexBusyError:
    left = max(0.0, expires - time.time())
    return IndexBusyError(
        f"index {index!r} is being written by another replica ({holder}); its lease runs out in {left:.0f} s "
        "unless renewed: try again when it is done"
    )


_held: set[str] = set()  # indexes this process is writing: the lease alone does not exclude our own threads
_held_guard = threading.Lock()
_constrained: set[str] = set()  # Neo4j servers (by address) known to have the lease constraint


def _ensure_constraint(graph: GraphBackend) -> None:
    """The constraint lives on the server, so it is made once per server address, not per handle."""
    address = str(getattr(graph, "address", ""))
    if getattr(graph, "name", "") == "neo4j" and address not in _constrained:
        graph.run(NEO4J_CONSTRAINT)
        _constrained.add(address)


@contextmanager
def write_lease(
    graph: GraphBackend, index: str, seconds: float, written: Callable[[], int] | None = None
) -> Iterator[None]:
    """Hold the index's lease for the block (renewed in the background), or IndexBusyError at once.
    `written`: the Milvus timestamp of this process's last write, recorded when the lease is let go."""
    with _held_guard:
        if index in _held:
            raise IndexBusyError(f"index {index!r} is being written by another request; try again when it is done")
        _held.add(index)
    try:
        with _leased(graph, index, seconds, written or (lambda: 0)):
            yield
    finally:
        with _held_guard:
            _held.discard(index)


@contextmanager
def _leased(graph: GraphBackend, index: str, seconds: float, written: Callable[[], int]) -> Iterator[None]:
    _ensure_constraint(graph)
    holder = this_process()
    params = {"index": index, "holder": holder}
    rows = graph.run(TAKE, {**params, "now": time.time(), "until": time.time() + seconds})
    if not rows or not rows[0]["taken"]:
        holder, expires = (rows[0]["holder"], rows[0]["expires"]) if rows else ("?", 0.0)
        raise _busy(index, str(holder), float(expires))
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(seconds / 3):
            try:
                if not graph.run(RENEW, {**params, "until": time.time() + seconds}):
                    log.error("write lease on index %r was lost (expired and taken by another replica)", index)
                    return
            except Exception:  # the graph may be briefly away; the next renewal tries again
                log.warning("could not renew the write lease on index %r", index, exc_info=True)

    renewer = threading.Thread(target=renew, name=f"lease-{index}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        try:
            graph.run(LET_GO, {**params, "written": int(written())})
        except Exception:  # it expires by itself
            log.warning("could not let go of the write lease on index %r; it expires in %.0f s", index, seconds)


def lease_busy(graph: GraphBackend, index: str) -> str | None:
    """Why the index cannot be written now (another holder's live lease), or None; takes nothing."""
    if index in _held:
        return f"index {index!r} is being written by another request; try again when it is done"
    rows = graph.run(PEEK, {"index": index})
    if rows and rows[0]["holder"] and rows[0]["holder"] != this_process() and float(rows[0]["expires"]) > time.time():
        return str(_busy(index, str(rows[0]["holder"]), float(rows[0]["expires"])))
    return None


def read_guarantee(graph: GraphBackend, index: str) -> int | None:
    """The Milvus timestamp a search of the index must see: its last finished write's, as its last lease
    holder recorded it. None (a strong read) while anyone holds the lease, this process included, or
    when no holder recorded one (an index last written by an earlier version)."""
    if index in _held:
        return None
    rows = graph.run(PEEK, {"index": index})
    if not rows or rows[0]["written"] is None:
        return None
    if rows[0]["holder"] and float(rows[0]["expires"]) > time.time():
        return None
    return int(rows[0]["written"])
