"""Neo4j through the official driver, used when `KGREPORT_NEO4J_URI` is set. Same queries as FalkorDB."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kgreport.knowledge.graph.backend import GraphRow, run_in_batches
from kgreport.knowledge.graph.errors import GraphUnavailableError


class Neo4jGraph:
    name = "neo4j"

    def __init__(self, uri: str, user: str = "neo4j", password: str = "", database: str | None = None) -> None:
        import neo4j

        self.address = uri
        self.database = database
        try:
            self._driver = neo4j.GraphDatabase.driver(uri, auth=(user, password))
            self._driver.verify_connectivity()
        except Exception as err:  # the driver raises ServiceUnavailable, AuthError, ValueError ...
            raise GraphUnavailableError(self.name, uri, str(err)) from err

    def run(self, query: str, params: Mapping[str, Any] | None = None) -> list[GraphRow]:
        import neo4j

        try:
            records, _, _ = self._driver.execute_query(query, dict(params or {}), database_=self.database)
        except neo4j.exceptions.ServiceUnavailable as err:
            raise GraphUnavailableError(self.name, self.address, str(err)) from err
        return [record.data() for record in records]

    def run_batched(self, query: str, rows: Iterable[Mapping[str, Any]], batch_size: int = 2000) -> int:
        return run_in_batches(self.run, query, rows, batch_size)

    def create_indexes(self) -> None:
        self.run("CREATE CONSTRAINT concept_id IF NOT EXISTS FOR (c:Concept) REQUIRE c.id IS UNIQUE")
        self.run("CREATE INDEX concept_name IF NOT EXISTS FOR (c:Concept) ON (c.name)")
        # A case is known by its index and its id together (several indexes share one graph).
        self.run("CREATE CONSTRAINT case_key IF NOT EXISTS FOR (c:Case) REQUIRE (c.index, c.id) IS UNIQUE")
        self.run("CREATE CONSTRAINT meta_key IF NOT EXISTS FOR (m:Meta) REQUIRE m.key IS UNIQUE")
        self.run("CREATE CONSTRAINT kb_finding_key IF NOT EXISTS FOR (f:KbFinding) REQUIRE f.key IS UNIQUE")
        self.run("CREATE CONSTRAINT diagnosis_key IF NOT EXISTS FOR (d:Diagnosis) REQUIRE d.key IS UNIQUE")

    def persist(self) -> None:
        """Neo4j commits durably on every transaction."""

    def close(self) -> None:
        self._driver.close()
