"""The ranked differential: names merged across sources, votes weighed, citations kept, recall counted."""

from __future__ import annotations

import pytest

from generator.differential import (
    CaseDiagnosis,
    diagnosis_key,
    diagnosis_name,
    rank_differential,
    recall_at,
    same_diagnosis,
)


def test_diagnosis_names_match_by_content_words() -> None:
    assert diagnosis_key("Pulmonary Embolism (PE).") == "pulmonary embolism"
    assert same_diagnosis("Atypical Pulmonary Hamartoma", "pulmonary hamartoma")
    assert not same_diagnosis("Pulmonary hamartoma", "Renal cell carcinoma")
    assert not same_diagnosis("", "anything") and not same_diagnosis("(x)", "x")


def test_cases_and_graph_vote_and_each_item_cites_its_sources() -> None:
    cases = [
        CaseDiagnosis("C1", 0.9, "Sarcoidosis."),
        CaseDiagnosis("C2", 0.8, "Lymphoma"),
        CaseDiagnosis("C3", 0.7, "sarcoidosis (stage II)"),
    ]
    graph = {
        "RID_LAD": [{"id": "RID_SARC", "name": "sarcoidosis"}, {"id": "RID_TB", "name": "tuberculosis"}],
        "RID_NODULE": [{"id": "RID_TB", "name": "Tuberculosis"}],
    }
    ranked = rank_differential(cases, graph)
    assert [d.name for d in ranked] == ["Sarcoidosis", "tuberculosis", "Lymphoma"]  # as first seen
    top = ranked[0]
    assert top.case_ids == ("C1", "C3") and top.concept_ids == ("RID_LAD",) and top.diagnosis_id == "RID_SARC"
    assert top.score == pytest.approx((0.9 + 0.7) / 2.4 + 1 / 2)
    assert ranked[1].concept_ids == ("RID_LAD", "RID_NODULE") and ranked[1].case_ids == ()
    only_cases = rank_differential(cases, graph, graph_weight=0.0, limit=1)
    assert [d.name for d in only_cases] == ["Sarcoidosis"]
    only_graph = rank_differential([], graph, case_weight=0.0)
    assert only_graph[0].name.lower() == "tuberculosis"
    assert recall_at(ranked, "Pulmonary sarcoidosis", 1) and not recall_at(ranked, "Lymphoma", 2)
    assert recall_at(ranked, "Lymphoma", 3)


def test_nothing_to_rank() -> None:
    assert rank_differential([], {}) == []
    assert rank_differential([CaseDiagnosis("C1", 0.5, "")], {"X": []}) == []


def test_a_long_diagnosis_is_named_by_its_first_words() -> None:
    text = "Diagnosis:  64 y.o. female with recurrent breast cancer with metastasis to lymph nodes and lungs.  More."
    assert diagnosis_name(text) == "64 y.o. female with recurrent breast cancer with metastasis to lymph nodes ..."
    assert diagnosis_name("Sarcoidosis\nstage II") == "Sarcoidosis" and diagnosis_name("") == ""
