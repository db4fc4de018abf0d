"""The user's archive in the graph: which findings each indexed case's report states, and its diagnosis.

Graph model:
  (:Case {id, index})-[:HAS_FINDING {status: present|absent|uncertain}]->(:Concept)
  (:Case {id, index})-[:HAS_DIAGNOSIS]->(:Concept)
A case is known by its index name and case id together, so several indexes share one graph without
mixing their statistics. Writing a case replaces what the graph held for it, so re-indexing a case (or
a rerun after a crash) never duplicates edges. Concept ids the graph does not hold are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kgreport.knowledge.graph.backend import GraphBackend

FINDING_STATUSES = ("present", "absent", "uncertain")

_CLEAR = "UNWIND $rows AS row MATCH (k:Case {index: row.index, id: row.case_id})-[r]->() DELETE r"
_CASES = "UNWIND $rows AS row MERGE (k:Case {index: row.index, id: row.case_id})"
_FINDINGS = (
    "UNWIND $rows AS row MATCH (k:Case {index: row.index, id: row.case_id}) "
    "MATCH (c:Concept {id: row.concept_id}) MERGE (k)-[:HAS_FINDING {status: row.status}]->(c)"
)
_DIAGNOSES = (
    "UNWIND $rows AS row MATCH (k:Case {index: row.index, id: row.case_id}) "
    "MATCH (c:Concept {id: row.concept_id}) MERGE (k)-[:HAS_DIAGNOSIS]->(c)"
)
_DELETE_CASES = "UNWIND $rows AS row MATCH (k:Case {index: row.index, id: row.case_id}) DETACH DELETE k"
_DELETE_INDEX = "MATCH (k:Case {index: $index}) DETACH DELETE k"


@dataclass(frozen=True)
class CaseFindings:
    """What one case's report states: (concept_id, status) findings and diagnosis concept ids."""

    case_id: str
    findings: tuple[tuple[str, str], ...] = ()
    diagnoses: tuple[str, ...] = ()


def write_cases(graph: GraphBackend, index: str, cases: Sequence[CaseFindings]) -> int:
    """Replace the graph's edges of `cases` (of index `index`) with theirs; returns finding edges sent."""
    bad = {status for case in cases for _, status in case.findings} - set(FINDING_STATUSES)
    if bad:
        raise ValueError(f"finding status must be one of {FINDING_STATUSES}, got {sorted(bad)}")
    keys = [{"index": index, "case_id": case.case_id} for case in cases]
    graph.run_batched(_CLEAR, keys)
    graph.run_batched(_CASES, keys)
    findings = [
        {"index": index, "case_id": case.case_id, "concept_id": concept_id, "status": status}
        for case in cases
        for concept_id, status in dict.fromkeys(case.findings)
    ]
    diagnoses = [
        {"index": index, "case_id": case.case_id, "concept_id": concept_id}
        for case in cases
        for concept_id in dict.fromkeys(case.diagnoses)
    ]
    sent = graph.run_batched(_FINDINGS, findings)
    graph.run_batched(_DIAGNOSES, diagnoses)
    return sent


def delete_cases(graph: GraphBackend, index: str, case_ids: Sequence[str]) -> None:
    graph.run_batched(_DELETE_CASES, [{"index": index, "case_id": case_id} for case_id in case_ids])


def delete_index(graph: GraphBackend, index: str) -> None:
    graph.run(_DELETE_INDEX, {"index": index})
