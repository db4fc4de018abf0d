"""Load RadLex and the Open Imaging Finding Models into the graph (idempotent: MERGE on ids).

Graph model:
  (:Concept {id: "RID…", name, source: "radlex"})-[:IS_A]->(:Concept)
  (:Concept:Finding {id: "OIFM_…", name, synonyms, description, source: "oifm"})
     -[:SAME_AS]->(:Concept)       RadLex term with the finding's name (case-insensitive)
     -[:LOCATED_IN]->(:Concept)    the finding's own RadLex codes (its organ) and its location values
                                   whose names are RadLex terms
     -[:RELATED_TO]->(:Finding)    another finding model its attributes name ("associated findings:
                                   emphysema", a "pleural effusion" attribute of a CABG finding)
Finding models tagged "diagnosis" are diseases: grounding offers them as differential diagnoses.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from kgreport.knowledge.graph.backend import GraphBackend
from kgreport.knowledge.ontology.sources import FindingModel, RadLexTerm, read_finding_models, read_radlex

BATCH = 5000
LOAD_STEPS = 4  # progress callbacks per load

_MARK_LOADED = "MERGE (m:Meta {key: 'ontology'}) SET m.fingerprint = $fingerprint"
_LOADED = "MATCH (m:Meta {key: 'ontology'}) RETURN m.fingerprint AS fingerprint"

_CONCEPTS = (
    "UNWIND $rows AS row MERGE (c:Concept {id: row.id}) "
    "SET c.name = row.name, c.name_lower = row.name_lower, c.source = 'radlex'"
)
_IS_A = (
    "UNWIND $rows AS row MATCH (c:Concept {id: row.child}) MATCH (p:Concept {id: row.parent}) MERGE (c)-[:IS_A]->(p)"
)
_FINDINGS = (
    "UNWIND $rows AS row MERGE (f:Concept {id: row.id}) "
    "SET f:Finding, f.name = row.name, f.name_lower = row.name_lower, f.source = 'oifm', "
    "f.synonyms = row.synonyms, f.description = row.description, f.tags = row.tags"
)
_EDGE = (
    "UNWIND $rows AS row MATCH (a:Concept {{id: row.source}}) MATCH (b:Concept {{id: row.target}}) "
    "MERGE (a)-[:{rel}]->(b)"
)


@dataclass
class LoadSummary:
    radlex_concepts: int = 0
    is_a_edges: int = 0
    finding_models: int = 0
    same_as_edges: int = 0
    located_in_edges: int = 0
    related_to_edges: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, float | int]:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def load_ontology(
    graph: GraphBackend,
    radlex_path: Path,
    finding_models_path: Path,
    progress: Callable[[str, int], None] | None = None,
) -> LoadSummary:
    """Write both sources into `graph`; running it again changes nothing."""
    started = time.perf_counter()
    summary = LoadSummary()
    graph.create_indexes()
    terms: list[RadLexTerm] = list(read_radlex(radlex_path))
    by_name = {t.name.lower(): t.rid for t in terms}
    summary.radlex_concepts = graph.run_batched(
        _CONCEPTS, ({"id": t.rid, "name": t.name, "name_lower": t.name.lower()} for t in terms), BATCH
    )
    if progress:
        progress("radlex concepts", summary.radlex_concepts)
    summary.is_a_edges = graph.run_batched(
        _IS_A, ({"child": t.rid, "parent": t.parent} for t in terms if t.parent), BATCH
    )
    if progress:
        progress("is-a edges", summary.is_a_edges)
    models: list[FindingModel] = list(read_finding_models(finding_models_path))
    summary.finding_models = graph.run_batched(
        _FINDINGS,
        (
            {
                "id": m.oifm_id,
                "name": m.name,
                "name_lower": m.name.lower(),
                "synonyms": list(m.synonyms),
                "description": m.description,
                "tags": list(m.tags),
            }
            for m in models
        ),
        BATCH,
    )
    if progress:
        progress("finding models", summary.finding_models)
    same_as = [{"source": m.oifm_id, "target": by_name[m.name.lower()]} for m in models if m.name.lower() in by_name]
    summary.same_as_edges = graph.run_batched(_EDGE.format(rel="SAME_AS"), same_as, BATCH)
    located: set[tuple[str, str]] = set()
    for m in models:
        located |= {(m.oifm_id, rid) for rid in m.anatomy_rids}
        located |= {(m.oifm_id, by_name[n.lower()]) for n in m.location_names if n.lower() in by_name}
    summary.located_in_edges = graph.run_batched(
        _EDGE.format(rel="LOCATED_IN"), ({"source": s, "target": t} for s, t in sorted(located)), BATCH
    )
    summary.related_to_edges = graph.run_batched(
        _EDGE.format(rel="RELATED_TO"), ({"source": s, "target": t} for s, t in related_findings(models)), BATCH
    )
    if progress:
        progress("relations", summary.located_in_edges + summary.related_to_edges)
    graph.run(_MARK_LOADED, {"fingerprint": sources_fingerprint(radlex_path, finding_models_path)})
    graph.persist()
    counts = ontology_counts(graph)  # what the graph now holds (rows naming a missing parent make no edge)
    summary.is_a_edges, summary.same_as_edges = counts["is_a"], counts["same_as"]
    summary.located_in_edges, summary.related_to_edges = counts["located_in"], counts["related_to"]
    summary.seconds = time.perf_counter() - started
    return summary


def sources_fingerprint(*paths: Path) -> str:
    digest = hashlib.sha1()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def ensure_ontology(graph: GraphBackend, radlex_path: Path, finding_models_path: Path) -> LoadSummary | None:
    """Load the ontology unless the graph already holds a complete load of these very files.

    The mark is written after the last edge, so a load cut short (a crash, a kill) is loaded again.
    """
    rows = graph.run(_LOADED)
    if rows and rows[0]["fingerprint"] == sources_fingerprint(radlex_path, finding_models_path):
        return None
    return load_ontology(graph, radlex_path, finding_models_path)


def related_findings(models: list[FindingModel]) -> list[tuple[str, str]]:
    """(finding, other finding) pairs where an attribute of the first names the second or a synonym of it."""
    by_name: dict[str, str] = {}
    for m in models:
        for name in (m.name, *m.synonyms):
            by_name.setdefault(name.lower(), m.oifm_id)
    pairs = {
        (m.oifm_id, by_name[n.lower()])
        for m in models
        for n in m.related_names
        if n.lower() in by_name and by_name[n.lower()] != m.oifm_id
    }
    return sorted(pairs)


def ontology_counts(graph: GraphBackend) -> dict[str, int]:
    """Node and edge counts by kind, for `kgreport kg info`."""
    counts = {
        "concepts": "MATCH (c:Concept) RETURN count(c) AS n",
        "finding_models": "MATCH (f:Finding) RETURN count(f) AS n",
        "is_a": "MATCH (:Concept)-[r:IS_A]->(:Concept) RETURN count(r) AS n",
        "same_as": "MATCH (:Finding)-[r:SAME_AS]->(:Concept) RETURN count(r) AS n",
        "located_in": "MATCH (:Finding)-[r:LOCATED_IN]->(:Concept) RETURN count(r) AS n",
        "related_to": "MATCH (:Finding)-[r:RELATED_TO]->(:Finding) RETURN count(r) AS n",
        "cases": "MATCH (c:Case) RETURN count(c) AS n",
    }
    return {name: int(graph.run(query)[0]["n"]) for name, query in counts.items()}
