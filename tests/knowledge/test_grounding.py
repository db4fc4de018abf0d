"""Grounding queries on a small real ontology in embedded FalkorDB, with archive statistics."""

from __future__ import annotations

import json

import pytest

from kgreport.knowledge.archive import CaseFindings, delete_cases, delete_index, write_cases
from kgreport.knowledge.extraction.extractor import Finding
from kgreport.knowledge.graph import GraphBackend
from kgreport.knowledge.grounding import find_conflicts, ground_concept, ground_concepts, ground_findings


@pytest.fixture
def graph(small_graph: GraphBackend) -> GraphBackend:
    return small_graph


def test_ground_a_finding_model(graph: GraphBackend) -> None:
    write_cases(
        graph,
        "train",
        [
            CaseFindings("c1", (("OIFM_N", "present"), ("RID4872", "present")), diagnoses=("RID4000",)),
            CaseFindings("c2", (("OIFM_N", "present"), ("RID4872", "absent"), ("RID9999", "present"))),
            CaseFindings("c3", (("OIFM_N", "uncertain"),)),
        ],
    )
    write_cases(graph, "other", [CaseFindings("c1", (("OIFM_N", "absent"),))])
    g = ground_concept(graph, "OIFM_N", index="train")
    assert g.name == "nodule" and g.source == "oifm" and g.reason is None
    assert {a["id"] for a in g.ancestors} == {"RID5"}  # via SAME_AS nodule (RID3875) IS_A clinical finding
    assert g.locations == [{"id": "RID1301", "name": "lung"}]
    assert [f["id"] for f in g.related_findings] == ["OIFM_C", "OIFM_M"]  # same location, by name
    assert g.archive.cases == {"present": 2, "absent": 0, "uncertain": 1}
    assert g.archive.cases_total == 3
    assert g.archive.co_occurring == [{"id": "RID4872", "name": "pleural effusion", "cases": 1}]
    assert g.differential_diagnoses == [
        {"id": "RID4000", "name": "lung cancer", "cases": 1, "via": "archive"},
        {"id": "OIFM_C", "name": "bronchogenic carcinoma", "via": "ontology"},
    ]
    everywhere = ground_concept(graph, "OIFM_N")
    assert everywhere.archive.cases == {"present": 2, "absent": 1, "uncertain": 1}
    assert everywhere.archive.cases_total == 4


def test_attribute_relations_come_first(graph: GraphBackend) -> None:
    effusion, nodule = ground_concepts(graph, ["OIFM_E", "OIFM_P"])
    assert effusion.related_findings[0] == {"id": "OIFM_P", "name": "pulmonary nodule", "via": "attribute"}
    assert nodule.related_findings[0]["id"] == "OIFM_E"  # the relation reads both ways
    # a RadLex term reaches its finding-model twin's relations through SAME_AS
    assert ground_concept(graph, "RID4872").related_findings[0]["id"] == "OIFM_P"


def test_rewriting_and_deleting_cases(graph: GraphBackend) -> None:
    write_cases(graph, "train", [CaseFindings("c1", (("RID4872", "present"),))])
    write_cases(graph, "train", [CaseFindings("c1", (("RID4872", "absent"),))])
    assert ground_concept(graph, "RID4872").archive.cases == {"present": 0, "absent": 1, "uncertain": 0}
    with pytest.raises(ValueError, match="finding status"):
        write_cases(graph, "train", [CaseFindings("c1", (("RID4872", "maybe"),))])
    write_cases(graph, "train", [CaseFindings("c2", (("RID4872", "present"),))])
    write_cases(graph, "test", [CaseFindings("c2", (("RID4872", "present"),))])
    delete_cases(graph, "train", ["c1"])
    assert ground_concept(graph, "RID4872").archive.cases == {"present": 2, "absent": 0, "uncertain": 0}
    delete_index(graph, "train")
    assert ground_concept(graph, "RID4872").archive.cases_total == 1


def test_unknown_and_hostile_ids_are_empty_results_with_a_reason(graph: GraphBackend) -> None:
    hostile = ["RID0000000", "x'}) MATCH (n) DETACH DELETE n //", "", "RID1302"]
    groundings = ground_concepts(graph, hostile)
    for g in groundings[:3]:
        assert g.reason and "unknown concept id" in g.reason and not g.ancestors
    assert groundings[3].name == "right lung"  # nothing was deleted, and order is kept
    assert ground_concepts(graph, []) == []


def test_ground_findings_lists_conflicts(graph: GraphBackend) -> None:
    findings = [
        Finding("OIFM_N", "nodule", "nodule", 0, 6, "present"),
        Finding("OIFM_N", "nodule", "nodule", 20, 26, "absent"),
        Finding("OIFM_E", "pleural effusion", "effusion", 30, 38, "absent"),
    ]
    grounded = ground_findings(graph, findings)
    assert [g.concept_id for g in grounded.concepts] == ["OIFM_N", "OIFM_E"]
    assert grounded.conflicts == ["OIFM_N"]
    assert json.loads(json.dumps(grounded.as_json()))["findings"][2]["status"] == "absent"


def test_conflicts() -> None:
    assert find_conflicts([("A", "present"), ("B", "absent"), ("A", "absent"), ("C", "uncertain")]) == ["A"]
