"""Grounding: what the ontology graph and the archive say about a concept.

For a concept id: the concept, its ancestors (IS_A*, through SAME_AS for finding models), typical
locations (LOCATED_IN), related findings (other finding models at the same locations) and archive
statistics from `(:Case)-[:HAS_FINDING {status}]->(:Concept)` edges: how many cases have it present /
absent / uncertain, and which findings co-occur with it. Several concepts at once also get a
conflict list (a concept stated both present and absent).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from knowledge.graph.backend import GraphBackend

FINDING_STATUSES = ("present", "absent", "uncertain")
MAX_ANCESTOR_DEPTH = 15

_CONCEPT = "MATCH (c:Concept {id: $id}) RETURN c.id AS id, c.name AS name, c.source AS source"
_ANCESTORS = (
    f"MATCH (c:Concept {{id: $id}})-[:SAME_AS*0..1]->(:Concept)-[:IS_A*1..{MAX_ANCESTOR_DEPTH}]->(a:Concept) "
    "RETURN DISTINCT a.id AS id, a.name AS name"
)
_LOCATIONS = "MATCH (c:Concept {id: $id})-[:LOCATED_IN]->(l:Concept) RETURN DISTINCT l.id AS id, l.name AS name"
_RELATED = (
    "MATCH (c:Concept {id: $id})-[:LOCATED_IN]->(:Concept)<-[:LOCATED_IN]-(f:Finding) WHERE f.id <> $id "
    "RETURN DISTINCT f.id AS id, f.name AS name ORDER BY name LIMIT $limit"
)
_STATUS_COUNTS = "MATCH (:Case)-[r:HAS_FINDING]->(c:Concept {id: $id}) RETURN r.status AS status, count(r) AS n"
_CO_OCCURRING = (
    "MATCH (c:Concept {id: $id})<-[:HAS_FINDING {status: 'present'}]-(k:Case)"
    "-[:HAS_FINDING {status: 'present'}]->(o:Concept) WHERE o.id <> $id "
    "RETURN o.id AS id, o.name AS name, count(DISTINCT k) AS cases ORDER BY cases DESC, id LIMIT $limit"
)
_WRITE_FINDINGS = (
    "UNWIND $rows AS row MERGE (k:Case {id: row.case_id}) WITH k, row "
    "MATCH (c:Concept {id: row.concept_id}) MERGE (k)-[r:HAS_FINDING {status: row.status}]->(c)"
)
_CLEAR_CASE = "MATCH (k:Case {id: $id})-[r:HAS_FINDING]->() DELETE r"


@dataclass
class Grounding:
    """Everything known about one concept; `reason` says why it is empty for an unknown id."""

    concept_id: str
    name: str | None = None
    source: str | None = None
    ancestors: list[dict[str, str]] = field(default_factory=list)
    locations: list[dict[str, str]] = field(default_factory=list)
    related_findings: list[dict[str, str]] = field(default_factory=list)
    archive: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def ground_concept(graph: GraphBackend, concept_id: str, *, limit: int = 10) -> Grounding:
    rows = graph.run(_CONCEPT, {"id": concept_id})
    if not rows:
        return Grounding(concept_id=concept_id, reason=f"unknown concept id {concept_id!r}")
    params = {"id": concept_id, "limit": limit}
    counts = {status: 0 for status in FINDING_STATUSES}
    for row in graph.run(_STATUS_COUNTS, params):
        counts[str(row["status"])] = int(row["n"])
    return Grounding(
        concept_id=concept_id,
        name=rows[0]["name"],
        source=rows[0]["source"],
        ancestors=graph.run(_ANCESTORS, params),
        locations=graph.run(_LOCATIONS, params),
        related_findings=graph.run(_RELATED, params),
        archive={"cases": counts, "co_occurring": graph.run(_CO_OCCURRING, params)},
    )


def find_conflicts(statements: Iterable[tuple[str, str]]) -> list[str]:
    """Concept ids stated both present and absent among (concept_id, status) pairs."""
    seen: dict[str, set[str]] = {}
    for concept_id, status in statements:
        seen.setdefault(concept_id, set()).add(status)
    return sorted(c for c, statuses in seen.items() if {"present", "absent"} <= statuses)


def write_case_findings(graph: GraphBackend, case_id: str, findings: Sequence[tuple[str, str]]) -> int:
    """Replace a case's HAS_FINDING edges with (concept_id, status) pairs; unknown concepts are ignored."""
    bad = {status for _, status in findings} - set(FINDING_STATUSES)
    if bad:
        raise ValueError(f"finding status must be one of {FINDING_STATUSES}, got {sorted(bad)}")
    graph.run(_CLEAR_CASE, {"id": case_id})
    rows = [{"case_id": case_id, "concept_id": c, "status": s} for c, s in dict.fromkeys(findings)]
    return graph.run_batched(_WRITE_FINDINGS, rows)
