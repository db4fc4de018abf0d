"""Grounding: what the ontology graph and the archive say about the concepts of a report.

For each concept: the concept, its ancestors (IS_A*, through SAME_AS for finding models; nearest
first), typical locations (LOCATED_IN), related findings (RELATED_TO, then other findings at the same
locations), differential diagnoses (finding models tagged "diagnosis" among those, and the diagnoses
of archive cases where the finding is present, with counts) and archive statistics from
`(:Case)-[:HAS_FINDING {status}]->(:Concept)` edges: cases with it present / absent / uncertain and the
findings that co-occur with it. A report's findings also get a conflict list (a concept stated both
present and absent).

Every facet is one query over all the concepts at once (`UNWIND $ids`), and the facets run side by side,
so grounding a report of eight findings costs about the slowest query, not fifty round trips.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from kgreport.json_types import JsonObject
from kgreport.knowledge.archive import FINDING_STATUSES
from kgreport.knowledge.graph.backend import GraphBackend, GraphRow

if TYPE_CHECKING:  # the extractor pulls in spaCy; grounding by concept id does not need it
    from kgreport.knowledge.extraction.extractor import Finding

MAX_ANCESTOR_DEPTH = 15
FACET_WORKERS = 4
DIAGNOSIS_TAG = "diagnosis"

# Archive queries start from the (indexed) concept and filter cases by index in a WITH: FalkorDB
# otherwise plans a scan of every case node (20 ms instead of under 1 ms with 500 cases).
_CASES_OF = (
    "UNWIND $ids AS id MATCH (c:Concept {id: id}) WITH id, c MATCH (c)<-[r:HAS_FINDING]-(k:Case) "
    "WITH id, r, k WHERE $index IS NULL OR k.index = $index "
)
_CONCEPTS = "UNWIND $ids AS id MATCH (c:Concept {id: id}) RETURN id, c.name AS name, c.source AS source"
_ANCESTORS = (
    "UNWIND $ids AS id "
    f"MATCH p = (:Concept {{id: id}})-[:SAME_AS*0..1]-(:Concept)-[:IS_A*1..{MAX_ANCESTOR_DEPTH}]->(a:Concept) "
    "WITH id, a, min(length(p)) AS depth ORDER BY depth, a.name "
    "RETURN id, collect({id: a.id, name: a.name}) AS found"
)
_LOCATIONS = (
    "UNWIND $ids AS id MATCH (:Concept {id: id})-[:SAME_AS*0..1]-(:Concept)-[:LOCATED_IN]->(l:Concept) "
    "WITH DISTINCT id, l ORDER BY l.name RETURN id, collect({id: l.id, name: l.name}) AS found"
)
# Findings linked by an attribute of either one come first, then findings sharing a location.
_RELATED = (
    "UNWIND $ids AS id MATCH (:Concept {id: id})-[:SAME_AS*0..1]-(s:Concept) "
    "OPTIONAL MATCH (s)-[:RELATED_TO]-(r:Finding) "
    "OPTIONAL MATCH (s)-[:LOCATED_IN]->(:Concept)<-[:LOCATED_IN]-(n:Finding) "
    "WITH id, collect(DISTINCT r) AS linked, collect(DISTINCT n) AS nearby "
    "RETURN id, [f IN linked WHERE f.id <> id | {id: f.id, name: f.name, via: 'attribute', "
    f"diagnosis: '{DIAGNOSIS_TAG}' IN coalesce(f.tags, [])}}] AS linked, "
    "[f IN nearby WHERE f.id <> id AND NOT f IN linked | {id: f.id, name: f.name, via: 'location', "
    f"diagnosis: '{DIAGNOSIS_TAG}' IN coalesce(f.tags, [])}}] AS nearby"
)
_STATUS_COUNTS = _CASES_OF + "RETURN id, r.status AS status, count(DISTINCT k) AS n"
_CO_OCCURRING = (
    _CASES_OF + "AND r.status = 'present' MATCH (k)-[:HAS_FINDING {status: 'present'}]->(o:Concept) WHERE o.id <> id "
    "WITH id, o, count(DISTINCT k) AS cases ORDER BY cases DESC, o.id "
    "RETURN id, collect({id: o.id, name: o.name, cases: cases})[0..$limit] AS found"
)
_ARCHIVE_DIAGNOSES = (
    _CASES_OF + "AND r.status = 'present' MATCH (k)-[:HAS_DIAGNOSIS]->(d:Concept) "
    "WITH id, d, count(DISTINCT k) AS cases ORDER BY cases DESC, d.id "
    "RETURN id, collect({id: d.id, name: d.name, cases: cases, via: 'archive'})[0..$limit] AS found"
)
_ARCHIVE_SIZE = "MATCH (k:Case) WHERE $index IS NULL OR k.index = $index RETURN count(k) AS n"


@dataclass
class ConceptArchive:
    """What the archive says of one concept: in how many cases it is present, absent or uncertain, of how
    many (`index`: one index's cases, or None for all), and the findings it co-occurs with."""

    index: str | None = None
    cases_total: int = 0
    cases: dict[str, int] = field(default_factory=dict)  # status → cases
    co_occurring: list[GraphRow] = field(default_factory=list)


@dataclass
class Grounding:
    """Everything known about one concept; `reason` says why it is empty for an unknown id."""

    concept_id: str
    name: str | None = None
    source: str | None = None
    ancestors: list[GraphRow] = field(default_factory=list)
    locations: list[GraphRow] = field(default_factory=list)
    related_findings: list[GraphRow] = field(default_factory=list)
    differential_diagnoses: list[GraphRow] = field(default_factory=list)
    archive: ConceptArchive = field(default_factory=ConceptArchive)
    reason: str | None = None

    def as_json(self) -> JsonObject:
        return asdict(self)

    def facts(self, max_ancestors: int = 6) -> list[str]:
        """The grounding as short readable lines (for people, and for an LLM's evidence block)."""
        if self.reason:
            return [f"{self.concept_id}: {self.reason}"]
        cases, archive = self.archive.cases, self.archive
        return [
            f"{self.name} [{self.concept_id}] ({self.source})",
            f"is a: {_names(self.ancestors[:max_ancestors])}",
            f"located in: {_names(self.locations)}",
            f"related findings: {_names(self.related_findings)}",
            f"differential diagnoses: {_names(self.differential_diagnoses, 'cases')}",
            f"archive: present in {cases.get('present', 0)}, absent in {cases.get('absent', 0)}, uncertain in "
            f"{cases.get('uncertain', 0)} of {archive.cases_total} cases; "
            f"co-occurs with: {_names(archive.co_occurring, 'cases')}",
        ]


def _names(items: list[GraphRow], count: str | None = None) -> str:
    """ "a, b (3 cases)" for a list of {id, name[, count]} items; "none" when empty."""
    parts = [
        f"{i['name']} ({i[count]} case{'' if i[count] == 1 else 's'})" if count and count in i else str(i["name"])
        for i in items
    ]
    return ", ".join(parts) or "none"


@dataclass
class GroundedFindings:
    """A report's findings with the grounding of each distinct concept and the conflicts among them."""

    findings: list[Finding]
    concepts: list[Grounding]
    conflicts: list[str]

    def as_json(self) -> JsonObject:
        return {
            "findings": [f.as_json() for f in self.findings],
            "concepts": [g.as_json() for g in self.concepts],
            "conflicts": self.conflicts,
        }


def _by_id(rows: Iterable[Mapping[str, Any]], key: str = "found") -> dict[str, list[GraphRow]]:
    """`{id: [plain dicts]}` from rows of `(id, collected list)`; the drivers return maps as OrderedDicts."""
    return {str(row["id"]): [dict(item) for item in row[key]] for row in rows}


def ground_concepts(
    graph: GraphBackend, concept_ids: Sequence[str], *, index: str | None = None, limit: int = 10
) -> list[Grounding]:
    """One Grounding per id, in order (repeated ids share one); archive statistics of `index`, or all."""
    ids = list(dict.fromkeys(str(c) for c in concept_ids))
    if not ids:
        return []
    known = {str(row["id"]): row for row in graph.run(_CONCEPTS, {"ids": ids})}
    found = [c for c in ids if c in known]
    params = {"ids": found, "limit": limit, "index": index}
    groundings: dict[str, Grounding] = {c: Grounding(c, reason=f"unknown concept id {c!r}") for c in ids}
    if not found:
        return [groundings[c] for c in concept_ids]
    # The facets are independent read queries: the graph server answers them side by side.
    queries = (_ANCESTORS, _LOCATIONS, _RELATED, _CO_OCCURRING, _ARCHIVE_DIAGNOSES, _STATUS_COUNTS, _ARCHIVE_SIZE)
    with ThreadPoolExecutor(max_workers=FACET_WORKERS) as pool:
        results = list(pool.map(lambda query: graph.run(query, params), queries))
    ancestor_rows, location_rows, related_rows, co_rows, dx_rows, count_rows, size_rows = results
    ancestors, locations = _by_id(ancestor_rows), _by_id(location_rows)
    linked, nearby = _by_id(related_rows, "linked"), _by_id(related_rows, "nearby")
    co_occurring, archive_dx = _by_id(co_rows), _by_id(dx_rows)
    counts: dict[str, dict[str, int]] = {c: dict.fromkeys(FINDING_STATUSES, 0) for c in found}
    for row in count_rows:
        counts[str(row["id"])][str(row["status"])] = int(row["n"])
    archive_size = int(size_rows[0]["n"])
    for c in found:
        related = (linked.get(c, []) + sorted(nearby.get(c, []), key=lambda f: str(f["name"]).lower()))[:limit]
        ontology_dx = [{**f, "via": "ontology"} for f in related if f.pop("diagnosis")]
        groundings[c] = Grounding(
            concept_id=c,
            name=known[c]["name"],
            source=known[c]["source"],
            ancestors=ancestors.get(c, []),
            locations=locations.get(c, []),
            related_findings=related,
            differential_diagnoses=(archive_dx.get(c, []) + ontology_dx)[:limit],
            archive=ConceptArchive(
                index=index, cases_total=archive_size, cases=counts[c], co_occurring=co_occurring.get(c, [])
            ),
        )
    return [groundings[c] for c in concept_ids]


def ground_concept(graph: GraphBackend, concept_id: str, *, index: str | None = None, limit: int = 10) -> Grounding:
    return ground_concepts(graph, [concept_id], index=index, limit=limit)[0]


def ground_findings(
    graph: GraphBackend, findings: Sequence[Finding], *, index: str | None = None, limit: int = 10
) -> GroundedFindings:
    """Ground the distinct concepts of a report's findings and list its present/absent conflicts."""
    concepts = ground_concepts(graph, list(dict.fromkeys(f.concept_id for f in findings)), index=index, limit=limit)
    return GroundedFindings(list(findings), concepts, find_conflicts((f.concept_id, f.status) for f in findings))


def find_conflicts(statements: Iterable[tuple[str, str]]) -> list[str]:
    """Concept ids stated both present and absent among (concept_id, status) pairs."""
    seen: dict[str, set[str]] = {}
    for concept_id, status in statements:
        seen.setdefault(concept_id, set()).add(status)
    return sorted(c for c, statuses in seen.items() if {"present", "absent"} <= statuses)
