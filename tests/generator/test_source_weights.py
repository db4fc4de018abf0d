"""Per-case source weights: computed from each source's signals, fitted to favour the source that is right."""

from pathlib import Path

import pytest

from kgreport.generator.differential import CaseDiagnosis, SourceVotes, case_votes, knowledge_votes
from kgreport.generator.source_weights import FixedWeights, SourceWeights, fit_source_weights, signals
from kgreport.knowledge.ontology.diagnosis_ranking import RankedDiagnosis


def _image(agreeing: int) -> SourceVotes:
    cases = [CaseDiagnosis(f"A{n}", 0.9, "Meningioma") for n in range(agreeing)]
    cases += [CaseDiagnosis(f"B{n}", 0.9, f"Disease {n}") for n in range(5 - agreeing)]
    return case_votes("image", cases)


def _knowledge() -> SourceVotes:
    return knowledge_votes([RankedDiagnosis("Schwannoma", 2.0), RankedDiagnosis("Meningioma", 1.0)])


def test_signals_say_how_much_a_source_agrees_with_itself() -> None:
    assert signals(_image(5))["agreement"] == 1.0 and signals(_image(1))["agreement"] == pytest.approx(0.2)
    assert signals(_image(5))["margin"] == 1.0
    assert set(signals(_knowledge())) == {"top", "margin", "explained", "stated", "notes"}
    assert signals(_knowledge(), [_knowledge(), SourceVotes("text")])["notes"] == 1.0


def test_weights_cover_only_the_sources_that_voted() -> None:
    equal = SourceWeights()
    assert equal([_image(3), _knowledge()]) == pytest.approx({"image": 0.5, "knowledge": 0.5})
    assert equal([_image(3), SourceVotes("text")]) == {"image": 1.0} and equal([]) == {}
    assert FixedWeights({"image": 0.2, "text": 0.8})([_image(3), _knowledge()]) == {"image": 1.0, "knowledge": 0.0}


def test_fitting_learns_to_trust_retrieval_when_its_cases_agree(tmp_path: Path) -> None:
    # Agreeing cases name the truth (Meningioma); split cases do not, and then the knowledge base is right.
    cases = []
    for n in range(20):
        agreeing = 5 if n % 2 else 1
        votes = [_image(agreeing), _knowledge()]
        truth = {"image": votes[0].shares.get("Meningioma", 0.0), "knowledge": 0.0}
        if agreeing == 1:
            truth = {"image": 0.0, "knowledge": votes[1].shares["Schwannoma"]}
        cases.append((votes, truth))
    fitted = fit_source_weights(cases, fitted_on="test")
    agree = fitted([_image(5), _knowledge()])
    split = fitted([_image(1), _knowledge()])
    assert agree["image"] > 0.6 and split["knowledge"] > 0.6  # per case: the same sources, other weights
    path = tmp_path / "source_weights.json"
    fitted.save(path)
    assert SourceWeights.load(path)([_image(5), _knowledge()]) == pytest.approx(agree)
    assert SourceWeights.for_writer(tmp_path).fitted_on == "test"
    assert SourceWeights.for_writer(tmp_path / "none").coefficients == {}


def test_a_weights_file_naming_an_unknown_source_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "source_weights.json"
    path.write_text('{"coefficients": {"radiologist": {"bias": 1.0}}}')
    with pytest.raises(ValueError, match="unknown differential source"):
        SourceWeights.load(path)
