"""The ranked differential: names merged across sources, votes weighed, citations kept, recall counted."""

from __future__ import annotations

import pytest

from kgreport.generator.differential import (
    CaseDiagnosis,
    case_votes,
    diagnosis_key,
    diagnosis_name,
    fuse,
    knowledge_votes,
    recall_at,
    same_diagnosis,
    short_diagnosis,
)
from kgreport.knowledge.ontology.diagnosis_ranking import RankedDiagnosis, Support


def test_diagnosis_names_match_by_content_words() -> None:
    assert diagnosis_key("Pulmonary Embolism (PE).") == "pulmonary embolism"
    assert same_diagnosis("Atypical Pulmonary Hamartoma", "pulmonary hamartoma")
    assert not same_diagnosis("Pulmonary hamartoma", "Renal cell carcinoma")
    assert not same_diagnosis("", "anything") and not same_diagnosis("(x)", "x")


def test_each_source_votes_and_the_blend_cites_them_all() -> None:
    cases = [
        CaseDiagnosis("C1", 0.9, "Sarcoidosis."),
        CaseDiagnosis("C2", 0.8, "Lymphoma"),
        CaseDiagnosis("C3", 0.7, "sarcoidosis (stage II)"),
    ]
    image = case_votes("image", cases)
    assert image.shares == pytest.approx({"Sarcoidosis": 1.6 / 2.4, "Lymphoma": 0.8 / 2.4})
    assert image.case_ids["Sarcoidosis"] == ("C1", "C3") and image.agreement == pytest.approx(2 / 3)
    support = Support("bilateral hilar lymphadenopathy", "Bilateral hilar lymphadenopathy", "kb", 3.0)
    knowledge = knowledge_votes(
        [
            RankedDiagnosis("Tuberculosis", 3.0, ("TB",), (support,)),
            RankedDiagnosis("Sarcoidosis", 1.0, (), (support,), ("renal cyst",)),
        ]
    )
    assert knowledge.shares == pytest.approx({"Tuberculosis": 0.75, "Sarcoidosis": 0.25})

    even = fuse([image, knowledge], {"image": 0.5, "knowledge": 0.5}, limit=5)
    assert [d.name for d in even] == ["Sarcoidosis", "Tuberculosis", "Lymphoma"]
    top = even[0]
    assert top.case_ids == ("C1", "C3") and top.supports == (support,) and top.unexplained == ("renal cyst",)
    assert top.sources == pytest.approx({"image": 0.5 * 1.6 / 2.4, "knowledge": 0.5 * 0.25})
    assert top.score == pytest.approx(sum(top.sources.values()))
    # The weights change the answer: trusting the knowledge base puts tuberculosis first.
    assert fuse([image, knowledge], {"image": 0.1, "knowledge": 0.9}, limit=5)[0].name == "Tuberculosis"
    assert [d.name for d in fuse([image, knowledge], {"image": 1.0}, limit=1)] == ["Sarcoidosis"]
    assert recall_at(even, "Pulmonary sarcoidosis", 1) and not recall_at(even, "Lymphoma", 2)
    assert recall_at(even, "Lymphoma", 3)
    as_json = top.as_json()
    assert as_json["supports"][0]["kb_finding"] == "Bilateral hilar lymphadenopathy" and "image" in as_json["sources"]


def test_nothing_to_rank() -> None:
    assert fuse([], {}, limit=5) == []
    assert case_votes("image", [CaseDiagnosis("C1", 0.5, "")]).shares == {}
    assert fuse([knowledge_votes([])], {"knowledge": 1.0}, limit=5) == []


def test_a_long_diagnosis_is_named_by_its_first_words() -> None:
    text = "Diagnosis:  64 y.o. female with recurrent breast cancer with metastasis to lymph nodes and lungs.  More."
    assert diagnosis_name(text) == "64 y.o. female with recurrent breast cancer with metastasis to lymph nodes ..."
    assert diagnosis_name("Sarcoidosis\nstage II") == "Sarcoidosis" and diagnosis_name("") == ""


def test_a_diagnosis_field_describing_the_patient_names_no_diagnosis() -> None:
    assert short_diagnosis("64 y.o. female with recurrent breast cancer") == ""
    assert short_diagnosis("Malignant melanoma in a 45-year-old man") == "Malignant melanoma"
    assert case_votes("image", [CaseDiagnosis("C1", 0.9, "64 y.o. female")]).shares == {}
