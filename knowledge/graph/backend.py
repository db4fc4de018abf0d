"""The one interface both graph engines (embedded FalkorDB, Neo4j) offer to the rest of `knowledge`.

Queries are openCypher with every value passed as a parameter (`$name`), never formatted into the
query text, so quotes, backslashes and Cypher keywords in user data stay data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeAlias

# A row of a Cypher answer, keyed by the query's RETURN aliases: its values are whatever the query returns
# (ids, names, counts, lists), so each caller reads the aliases its own query names.
GraphRow: TypeAlias = dict[str, Any]


class GraphBackend(Protocol):
    name: str
    address: str

    def run(self, query: str, params: Mapping[str, Any] | None = None) -> list[GraphRow]:
        """Run one query; rows as dicts keyed by the RETURN aliases."""
        ...

    def run_batched(self, query: str, rows: Iterable[Mapping[str, Any]], batch_size: int = 2000) -> int:
        """Run an `UNWIND $rows AS row ...` write query over `rows` in batches; returns rows sent."""
        ...

    def create_indexes(self) -> None:
        """Indexes / constraints on concept ids and names (idempotent)."""
        ...

    def persist(self) -> None:
        """After a bulk load: FalkorDB writes a snapshot and compacts its append-only file (every acknowledged
        write is durable already); Neo4j has nothing to do."""
        ...

    def close(self) -> None: ...


def run_in_batches(
    run: Callable[[str, Mapping[str, Any]], object], query: str, rows: Iterable[Mapping[str, Any]], size: int
) -> int:
    """Send `rows` to an `UNWIND $rows AS row ...` query in lists of at most `size`; returns rows sent."""
    sent = 0
    batch: list[Mapping[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            run(query, {"rows": batch})
            sent, batch = sent + len(batch), []
    if batch:
        run(query, {"rows": batch})
        sent += len(batch)
    return sent
