"""Grounding queries on a small real ontology in embedded FalkorDB, with archive statistics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from knowledge.graph import GraphBackend, open_graph
from knowledge.grounding import find_conflicts, ground_concept, write_case_findings
from knowledge.ontology.loader import load_ontology


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[GraphBackend]:
    radlex = tmp_path / "radlex.csv"
    radlex.write_text(
        "anatomical entity,RID3,RID1\nlung,RID1301,RID3\nright lung,RID1302,RID1301\n"
        "clinical finding,RID5,RID1\nmass,RID3874,RID5\nnodule,RID3875,RID5\n"
        "pleural effusion,RID4872,RID5\n"
    )
    models = [
        {"oifm_id": "OIFM_N", "name": "nodule", "index_codes": [{"system": "RADLEX", "code": "RID1301"}]},
        {"oifm_id": "OIFM_M", "name": "Lung Mass", "attributes": [{"name": "location", "values": [{"name": "lung"}]}]},
        {"oifm_id": "OIFM_E", "name": "pleural effusion"},
    ]
    fm = tmp_path / "fm.jsonl"
    fm.write_text("".join(json.dumps(m) + "\n" for m in models))
    backend = open_graph(tmp_path / "data")
    load_ontology(backend, radlex, fm)
    yield backend
    backend.close()


def test_ground_a_finding_model(graph: GraphBackend) -> None:
    write_case_findings(graph, "c1", [("OIFM_N", "present"), ("RID4872", "present")])
    write_case_findings(graph, "c2", [("OIFM_N", "present"), ("RID4872", "absent"), ("RID9999", "present")])
    write_case_findings(graph, "c3", [("OIFM_N", "uncertain")])
    g = ground_concept(graph, "OIFM_N")
    assert g.name == "nodule" and g.source == "oifm" and g.reason is None
    assert {a["id"] for a in g.ancestors} == {"RID5"}  # via SAME_AS nodule (RID3875) IS_A clinical finding
    assert g.locations == [{"id": "RID1301", "name": "lung"}]
    assert g.related_findings == [{"id": "OIFM_M", "name": "Lung Mass"}]
    assert g.archive["cases"] == {"present": 2, "absent": 0, "uncertain": 1}
    assert g.archive["co_occurring"] == [{"id": "RID4872", "name": "pleural effusion", "cases": 1}]


def test_rewriting_a_case_replaces_its_findings(graph: GraphBackend) -> None:
    write_case_findings(graph, "c1", [("RID4872", "present")])
    write_case_findings(graph, "c1", [("RID4872", "absent")])
    assert ground_concept(graph, "RID4872").archive["cases"] == {"present": 0, "absent": 1, "uncertain": 0}
    with pytest.raises(ValueError, match="finding status"):
        write_case_findings(graph, "c1", [("RID4872", "maybe")])


def test_unknown_and_hostile_ids_are_empty_results_with_a_reason(graph: GraphBackend) -> None:
    for concept_id in ("RID0000000", "x'}) MATCH (n) DETACH DELETE n //", ""):
        g = ground_concept(graph, concept_id)
        assert g.reason and "unknown concept id" in g.reason and not g.ancestors
    assert ground_concept(graph, "RID1302").name == "right lung"  # nothing was deleted


def test_conflicts() -> None:
    assert find_conflicts([("A", "present"), ("B", "absent"), ("A", "absent"), ("C", "uncertain")]) == ["A"]
