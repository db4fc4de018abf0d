"""During ingest, each case's report becomes graph edges: its findings (with status) and its diagnosis.

Findings come from the report's findings and impression sections; diagnoses are the concepts stated
present in its diagnosis section. The history section is left out: it tells why the study was done,
not what the images show. Edges are written before the case is committed to the case store, so a
crash in between leaves a case that the rerun rewrites, never a stored case without its findings.
"""

from __future__ import annotations

from collections.abc import Sequence

from knowledge.archive import CaseFindings, delete_cases, write_cases
from knowledge.extraction.extractor import FindingExtractor
from knowledge.graph.backend import GraphBackend
from retrieval.records import Case

_KNOWN_CASES = "MATCH (k:Case {index: $index}) RETURN k.id AS id"


def observed_text(case: Case) -> str:
    """The part of a report that describes the images."""
    return "\n".join(x for x in (case.report.findings, case.report.impression) if x.strip())


class FindingRecorder:
    """Writes the findings of the cases of one index into the graph."""

    def __init__(self, extractor: FindingExtractor, graph: GraphBackend, index: str) -> None:
        self.extractor = extractor
        self.graph = graph
        self.index = index

    def case_findings(self, cases: Sequence[Case]) -> list[CaseFindings]:
        texts = [observed_text(c) for c in cases] + [c.report.diagnosis for c in cases]
        extracted = self.extractor.extract_many(texts)
        observed, diagnosed = extracted[: len(cases)], extracted[len(cases) :]
        return [
            CaseFindings(
                case_id=case.case_id,
                findings=tuple((f.concept_id, f.status) for f in findings),
                diagnoses=tuple(f.concept_id for f in diagnosis if f.status == "present"),
            )
            for case, findings, diagnosis in zip(cases, observed, diagnosed, strict=True)
        ]

    def record(self, cases: Sequence[Case]) -> int:
        """Extract and write; returns the number of finding edges written."""
        if not cases:
            return 0
        return write_cases(self.graph, self.index, self.case_findings(cases))

    def recorded_case_ids(self) -> set[str]:
        return {str(row["id"]) for row in self.graph.run(_KNOWN_CASES, {"index": self.index})}

    def forget(self, case_ids: Sequence[str]) -> None:
        delete_cases(self.graph, self.index, case_ids)
