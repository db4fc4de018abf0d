"""Load the finding → diagnosis knowledge base (`knowledge.ontology.diagnosis_kb`) into the graph (idempotent).

Graph model, beside the ontology's (`knowledge.ontology.loader`):
  (:KbFinding {key, name, specificity, negative})   a finding as the knowledge base names it ("Snowstorm
                                                      appearance"); `:Finding` already labels the OIFM models
     -[:SUGGESTS {source, modalities, regions, pathognomonic}]->
  (:Diagnosis {key, name, synonyms})
     -[:SAME_AS {method}]->  (:Concept)   the RadLex or OIFM concept of the same name ("name") or one of
                                          its synonyms ("synonym"), where the ontology has one
A (:KbSource {name, fingerprint}) node records which tables were loaded: a load of other tables (a new
package version, a changed reader) first removes the old findings and diagnoses, so nothing stale stays.
One SUGGESTS edge per (finding, diagnosis, source table): rows of one table that differ only in modality or
region are one edge listing them all. MERGE on keys, so a second load changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

from kgreport.knowledge.graph.backend import GraphBackend
from kgreport.knowledge.ontology.diagnosis_kb import (
    SOURCE,
    Diagnosis,
    DiagnosisKB,
    Suggestion,
    diagnosis_key,
    finding_key,
    read_diagnosis_kb,
)

BATCH = 2000

_FINDINGS = (
    "UNWIND $rows AS row MERGE (f:KbFinding {key: row.key}) "
    "SET f.name = row.name, f.specificity = row.specificity, f.negative = row.negative"
)
_DIAGNOSES = "UNWIND $rows AS row MERGE (d:Diagnosis {key: row.key}) SET d.name = row.name, d.synonyms = row.synonyms"
_SUGGESTS = (
    "UNWIND $rows AS row MATCH (f:KbFinding {key: row.finding}) MATCH (d:Diagnosis {key: row.diagnosis}) "
    "MERGE (f)-[r:SUGGESTS {source: row.source}]->(d) "
    "SET r.modalities = row.modalities, r.regions = row.regions, r.pathognomonic = row.pathognomonic"
)
_SAME_AS = (
    "UNWIND $rows AS row MATCH (d:Diagnosis {key: row.diagnosis}) MATCH (c:Concept {id: row.concept}) "
    "MERGE (d)-[r:SAME_AS]->(c) SET r.method = row.method"
)
_FINGERPRINT = "MATCH (s:KbSource {name: $name}) RETURN s.fingerprint AS fingerprint"
_SET_FINGERPRINT = "MERGE (s:KbSource {name: $name}) SET s.fingerprint = $fingerprint"
_CLEAR = "MATCH (n) WHERE n:KbFinding OR n:Diagnosis DETACH DELETE n"
_CONCEPTS = "MATCH (c:Concept) RETURN c.id AS id, c.name AS name, c.synonyms AS synonyms"
_COUNTS = {
    "kb_findings": "MATCH (f:KbFinding) RETURN count(f) AS n",
    "diagnoses": "MATCH (d:Diagnosis) RETURN count(d) AS n",
    "suggests": "MATCH (:KbFinding)-[r:SUGGESTS]->(:Diagnosis) RETURN count(r) AS n",
    "same_as": "MATCH (:Diagnosis)-[r:SAME_AS]->(:Concept) RETURN count(r) AS n",
}


@dataclass
class DiagnosisLoad:
    kb_findings: int
    diagnoses: int
    suggests: int
    same_as: int
    seconds: float

    def as_json(self) -> dict[str, float | int]:
        return {"kb_findings": self.kb_findings, "diagnoses": self.diagnoses, "suggests": self.suggests,
                "same_as": self.same_as, "seconds": round(self.seconds, 2)}  # fmt: skip


def _edges(kb: DiagnosisKB) -> list[dict[str, object]]:
    merged: dict[tuple[str, str, str], dict[str, object]] = {}
    for s in kb.suggestions:
        key = (finding_key(s.finding), diagnosis_key(s.diagnosis), s.source)
        edge = merged.setdefault(
            key,
            {"finding": key[0], "diagnosis": key[1], "source": s.source, "modalities": [], "regions": [],
             "pathognomonic": False},
        )  # fmt: skip
        edge["modalities"] = sorted({*edge["modalities"], *s.modalities})  # type: ignore[misc]
        edge["regions"] = sorted({*edge["regions"], *([s.region] if s.region else [])})  # type: ignore[misc]
        edge["pathognomonic"] = bool(edge["pathognomonic"]) or s.pathognomonic
    return list(merged.values())


def _same_as(graph: GraphBackend, kb: DiagnosisKB) -> list[dict[str, str]]:
    """Each diagnosis linked to the ontology concept of its name, else of one of its synonyms (exact after
    `diagnosis_key`: "Pulmonary Embolism" is RadLex's "pulmonary embolism"; no partial match)."""
    by_name: dict[str, str] = {}
    by_synonym: dict[str, str] = {}
    for row in graph.run(_CONCEPTS):
        by_name.setdefault(diagnosis_key(str(row["name"] or "")), str(row["id"]))
        for synonym in row.get("synonyms") or ():
            by_synonym.setdefault(diagnosis_key(str(synonym)), str(row["id"]))
    rows = []
    for key, diagnosis in kb.diagnoses.items():
        names = [key, *(diagnosis_key(s) for s in diagnosis.synonyms)]
        for table, method in ((by_name, "name"), (by_synonym, "synonym")):
            concept = next((table[n] for n in names if n and n in table), None)
            if concept:
                rows.append({"diagnosis": key, "concept": concept, "method": method})
                break
    return rows


def fingerprint(kb: DiagnosisKB) -> str:
    """A digest of the knowledge base's findings, diagnoses and edges: what a graph's copy must match."""
    rows = sorted(
        json.dumps([s.finding, s.diagnosis, s.source, s.modalities, s.region, s.pathognomonic]) for s in kb.suggestions
    )
    rows += sorted(json.dumps([k, d.name, d.synonyms]) for k, d in kb.diagnoses.items())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def loaded_fingerprint(graph: GraphBackend) -> str | None:
    rows = graph.run(_FINGERPRINT, {"name": SOURCE})
    return str(rows[0]["fingerprint"]) if rows and rows[0]["fingerprint"] else None


def load_diagnosis_kb(graph: GraphBackend, kb: DiagnosisKB | None = None) -> DiagnosisLoad:
    """Write the knowledge base's findings, diagnoses and SUGGESTS edges into `graph`; counts as it then holds."""
    started = time.perf_counter()
    kb = kb or read_diagnosis_kb()
    graph.create_indexes()
    digest = fingerprint(kb)
    if loaded_fingerprint(graph) not in (None, digest):  # other tables were loaded: start again
        graph.run(_CLEAR)
    specificity = kb.specificity()
    findings: dict[str, dict[str, object]] = {}
    for s in kb.suggestions:
        key = finding_key(s.finding)
        findings.setdefault(
            key, {"key": key, "name": s.finding, "specificity": specificity[key], "negative": s.negative}
        )
    graph.run_batched(_FINDINGS, findings.values(), BATCH)
    graph.run_batched(
        _DIAGNOSES, ({"key": k, "name": d.name, "synonyms": list(d.synonyms)} for k, d in kb.diagnoses.items()), BATCH
    )
    graph.run_batched(_SUGGESTS, _edges(kb), BATCH)
    graph.run_batched(_SAME_AS, _same_as(graph, kb), BATCH)
    graph.run(_SET_FINGERPRINT, {"name": SOURCE, "fingerprint": digest})
    graph.persist()
    counts = {name: int(graph.run(query)[0]["n"]) for name, query in _COUNTS.items()}
    return DiagnosisLoad(**counts, seconds=time.perf_counter() - started)


_READ = (
    "MATCH (f:KbFinding)-[r:SUGGESTS]->(d:Diagnosis) RETURN f.name AS finding, f.negative AS negative, "
    "r.source AS source, r.modalities AS modalities, r.regions AS regions, r.pathognomonic AS pathognomonic, "
    "d.name AS diagnosis, d.synonyms AS synonyms"
)
_READ_SAME_AS = "MATCH (d:Diagnosis)-[:SAME_AS]->(c:Concept) RETURN d.key AS diagnosis, c.id AS concept"


def read_diagnosis_kb_from_graph(graph: GraphBackend) -> DiagnosisKB:
    """The knowledge base as the graph holds it (what `load_diagnosis_kb` wrote, or a site's own edits):
    one `Suggestion` per SUGGESTS edge, its regions joined. Empty where nothing was loaded."""
    kb = DiagnosisKB([], {})
    concepts = {str(r["diagnosis"]): str(r["concept"]) for r in graph.run(_READ_SAME_AS)}
    for row in graph.run(_READ):
        name = str(row["diagnosis"])
        key = diagnosis_key(name)
        kb.diagnoses.setdefault(key, Diagnosis(name, tuple(row.get("synonyms") or ()), concepts.get(key)))
        kb.suggestions.append(
            Suggestion(
                finding=str(row["finding"]),
                diagnosis=name,
                source=str(row["source"]),
                modalities=tuple(row.get("modalities") or ()),
                region=" ".join(row.get("regions") or ()) or None,
                pathognomonic=bool(row.get("pathognomonic")),
                negative=bool(row.get("negative")),
            )
        )
    return kb


def ensure_diagnosis_kb(graph: GraphBackend) -> DiagnosisKB:
    """The graph's knowledge base, loaded into it first if it holds none or other tables' (as `kgreport kg load`
    does)."""
    if loaded_fingerprint(graph) != fingerprint(read_diagnosis_kb()):
        load_diagnosis_kb(graph)
    return read_diagnosis_kb_from_graph(graph)
