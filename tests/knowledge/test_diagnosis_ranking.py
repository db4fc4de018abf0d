"""Diagnoses ranked from all the stated findings together, over the real knowledge base tables."""

import pytest

from kgreport.knowledge.ontology.diagnosis_kb import read_diagnosis_kb
from kgreport.knowledge.ontology.diagnosis_ranking import DiagnosisRanker, StatedFinding, stem, systems


@pytest.fixture(scope="module")
def ranker() -> DiagnosisRanker:
    return DiagnosisRanker(read_diagnosis_kb())


def names(ranked: list) -> list[str]:
    return [d.name.lower() for d in ranked]


def test_words_are_matched_by_stem_and_regions_by_body_system() -> None:
    assert stem("enhancing") == stem("enhancement") == stem("enhances")
    assert systems("Neuroradiology") == {"neuro"} and systems("Head") == {"neuro"}
    assert systems("Spine and Muscles") == {"neuro", "msk"} and systems("Nuclear Medicine") == frozenset()


def test_a_specific_sign_finds_its_diagnosis_and_cites_it(ranker: DiagnosisRanker) -> None:
    ranked = ranker.rank([StatedFinding("apple-core constricting lesion of the sigmoid colon")], modality="CT")
    top = ranked[0]
    assert top.name.lower().startswith("colorectal cancer")
    assert top.supports[0].stated == "apple-core constricting lesion of the sigmoid colon"
    assert "apple-core" in top.supports[0].kb_finding.lower() and top.supports[0].source.startswith("radiology")


def test_explaining_more_findings_ranks_higher_and_unexplained_ones_are_listed(ranker: DiagnosisRanker) -> None:
    one = [StatedFinding("dilated esophagus")]
    two = [*one, StatedFinding("bird's beak sign at the gastroesophageal junction")]
    achalasia_one = next(d for d in ranker.rank(one, limit=50) if d.name == "Achalasia")
    ranked = ranker.rank([*two, StatedFinding("left renal cyst")], modality="CT")
    achalasia = next(d for d in ranked if d.name == "Achalasia")
    assert ranked[0].name == "Achalasia" and achalasia.score > achalasia_one.score
    assert len(achalasia.supports) == 2 and achalasia.unexplained == ("left renal cyst",)


def test_a_generic_word_alone_matches_nothing(ranker: DiagnosisRanker) -> None:
    generic = ranker.rank([StatedFinding("right-sided mass")])
    specific = ranker.rank([StatedFinding("apple-core constricting lesion")])
    assert max((d.score for d in generic), default=0.0) < specific[0].score / 2
    assert ranker.rank([StatedFinding("bilateral")]) == [] and ranker.rank([]) == []


def test_modality_specific_findings_do_not_apply_to_another_kind_of_study(ranker: DiagnosisRanker) -> None:
    stated = [StatedFinding("T2 light bulb bright signal adrenal mass")]
    on_mr = names(ranker.rank(stated, modality="MR"))
    on_ct = names(ranker.rank(stated, modality="CT"))
    assert "pheochromocytoma" in on_mr[:5] and "pheochromocytoma" not in on_ct


def test_a_denied_defining_finding_removes_the_diagnosis(ranker: DiagnosisRanker) -> None:
    stated = [StatedFinding("dilated esophagus"), StatedFinding("bird's beak sign")]
    assert "achalasia" in names(ranker.rank(stated))
    denied = [StatedFinding("dilated esophagus"), StatedFinding("achalasia", "absent")]
    assert "achalasia" not in names(ranker.rank(denied, limit=50))
