"""Ingest writes each report's findings into the real graph: build, backfill, rewrite, forget."""

from __future__ import annotations

from pathlib import Path

import pytest

from kgreport.indexing.archives.medpix import MedPixArchive
from kgreport.indexing.case_findings import FindingRecorder, observed_text
from kgreport.indexing.pipeline import Ingestor
from kgreport.knowledge.extraction.extractor import FindingExtractor
from kgreport.knowledge.graph import GraphBackend
from kgreport.retrieval.encoders.image_encoder import load_image_encoder
from kgreport.retrieval.encoders.text_encoder import TextEncoder
from kgreport.retrieval.records import Case
from kgreport.retrieval.stores.local.store import CaseStore

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

_EDGES = (
    "MATCH (k:Case {index: $index, id: $id})-[r:HAS_FINDING]->(c:Concept) RETURN c.id AS concept_id, r.status AS status"
)


def _edges(graph: GraphBackend, index: str, case_id: str) -> set[tuple[str, str]]:
    return {(r["concept_id"], r["status"]) for r in graph.run(_EDGES, {"index": index, "id": case_id})}


def _cases(archive: MedPixArchive) -> list[Case]:
    return [c for c in archive if isinstance(c, Case)]


def test_build_writes_findings_then_backfills_and_forgets(
    tmp_path: Path, demo_archive: Path, full_graph: GraphBackend, extractor: FindingExtractor
) -> None:
    image_encoder, text_encoder = load_image_encoder(REPO / "data" / "models" / "ct-encoder"), TextEncoder()
    archive = MedPixArchive(demo_archive, "train", limit=12)
    cases = _cases(archive)

    # An index built before findings were recorded: the graph knows none of its cases.
    store = CaseStore.create_for(tmp_path / "idx", image_encoder, text_encoder)
    plain = Ingestor(store, image_encoder, text_encoder).ingest(archive)
    assert plain.cases_added == len(cases) and plain.finding_edges == 0
    recorder = FindingRecorder(extractor, full_graph, "findings-test")
    assert recorder.recorded_case_ids() == set()

    # Running the build again with a recorder embeds nothing and writes every case's findings.
    again = Ingestor(store, image_encoder, text_encoder, recorder=recorder).ingest(archive)
    assert again.cases_added == 0 and again.findings_backfilled == len(cases)
    assert recorder.recorded_case_ids() == {c.case_id for c in cases}
    assert again.finding_edges > len(cases), "a dozen real reports state more than one finding each"
    case = max(cases, key=lambda c: len(extractor.extract(observed_text(c))))
    expected = {(f.concept_id, f.status) for f in extractor.extract(observed_text(case))}
    assert _edges(full_graph, "findings-test", case.case_id) == expected

    # Rewriting is idempotent; a third run has nothing left to do.
    recorder.record([case])
    assert _edges(full_graph, "findings-test", case.case_id) == expected
    third = Ingestor(store, image_encoder, text_encoder, recorder=recorder).ingest(archive)
    assert third.findings_backfilled == 0 and third.finding_edges == 0

    recorder.forget([case.case_id])
    assert case.case_id not in recorder.recorded_case_ids()
    assert _edges(full_graph, "findings-test", case.case_id) == set()
    store.close()
