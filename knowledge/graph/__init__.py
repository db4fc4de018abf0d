"""Graph storage: one openCypher query set over embedded FalkorDB (default), a FalkorDB server, or Neo4j."""

from __future__ import annotations

from pathlib import Path

from kgreport.errors import SettingError
from kgreport.knowledge.graph.backend import GraphBackend
from kgreport.knowledge.graph.errors import GraphUnavailableError


def open_graph(
    data_dir: str | Path,
    *,
    neo4j_uri: str | None = None,
    neo4j_user: str = "neo4j",
    neo4j_password: str = "",
    neo4j_database: str | None = None,
    falkordb_url: str | None = None,
    falkordb_password: str = "",
) -> GraphBackend:
    """Neo4j when a URI is given, else the FalkorDB server at `falkordb_url` (shared by every process that
    names it, connected on first query), else the embedded FalkorDB of `data_dir/graph` (started on first
    query). Both a Neo4j URI and a FalkorDB URL: ValueError, as either choice would ignore a setting."""
    if neo4j_uri and falkordb_url:
        raise SettingError("give a Neo4j URI or a FalkorDB server URL, not both: they name two different graphs")
    if neo4j_uri:
        from kgreport.knowledge.graph.neo4j_backend import Neo4jGraph

        return Neo4jGraph(neo4j_uri, neo4j_user, neo4j_password, neo4j_database)
    if falkordb_url:
        from kgreport.knowledge.graph.falkordb_server import FalkorDBServer

        return FalkorDBServer(falkordb_url, falkordb_password)
    from kgreport.knowledge.graph.falkordb_embedded import EmbeddedFalkorDB

    return EmbeddedFalkorDB(Path(data_dir) / "graph")


__all__ = ["GraphBackend", "GraphUnavailableError", "open_graph"]
