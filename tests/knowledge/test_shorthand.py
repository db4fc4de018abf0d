"""Radiology shorthand: abbreviations expanded (and made back), whole tokens only, negations and sides kept."""

from __future__ import annotations

import random

import pytest

from kgreport.knowledge.extraction.extractor import FindingExtractor
from kgreport.knowledge.extraction.shorthand import ABBREVIATIONS, abbreviate, as_sentences, expand_shorthand

EXAMPLE = "RUL 2cm spiculated nodule, no effusion, mediastinal LAD"
EXPANDED = "right upper lobe 2 cm spiculated nodule, no effusion, mediastinal lymphadenopathy"


def test_the_issue_example() -> None:
    assert expand_shorthand(EXAMPLE) == EXPANDED
    assert (
        as_sentences(EXPANDED) == "right upper lobe 2 cm spiculated nodule. no effusion. mediastinal lymphadenopathy."
    )


def test_every_abbreviation_expands_as_a_word() -> None:
    assert 150 <= len(ABBREVIATIONS) <= 250
    for key, expansion in ABBREVIATIONS.items():
        assert expand_shorthand(f"seen {key} here") == f"seen {expansion} here", key


@pytest.mark.parametrize(
    "text",
    ["PEDAL edema", "capeline", "the pelvis", "pe", "5 ms", "ms", "Ms", "L-spine", "C-spine", "2 L of fluid", "2 R"]
    + ["post contrast images", "post-op change", "RULE", "xLAD", "LAD2", "hx1", "PEs", "lad", "Hospital"],
)
def test_nothing_inside_words_or_ambiguous(text: str) -> None:
    assert expand_shorthand(text) == text


def test_case_where_it_matters() -> None:
    assert expand_shorthand("MS plaques") == "multiple sclerosis plaques"
    assert expand_shorthand("rul nodule, Ptx") == "right upper lobe nodule, pneumothorax"
    assert expand_shorthand("Hx of CVA") == "History of cerebrovascular accident"
    assert expand_shorthand("no PE/DVT") == "no pulmonary embolism/deep vein thrombosis"


def test_sides_negations_sizes_and_hedges() -> None:
    assert (
        expand_shorthand("L lower lobe GGO, R hilar LAD")
        == "left lower lobe ground-glass opacity, right hilar lymphadenopathy"
    )
    assert expand_shorthand("b/l effusions, no PTX") == "bilateral effusions, no pneumothorax"
    assert (
        expand_shorthand("3x4cm mass, 2.5mm nodule, 12 x 8mm LN")
        == "3 x 4 cm mass, 2.5 mm nodule, 12 x 8 mm lymph node"
    )
    assert (
        expand_shorthand("?PE, RLL consolidation?")
        == "possible pulmonary embolism, possible right lower lobe consolidation"
    )
    assert expand_shorthand("CTA neg for PE, D-dimer -ve") == "CTA negative for pulmonary embolism, D-dimer negative"
    assert expand_shorthand("s/p R nephrectomy w/o contrast, w/contrast") == (
        "status post right nephrectomy without contrast, with contrast"
    )
    assert expand_shorthand("no effusion?") == "no effusion?"  # a hedged negation is left as typed


def test_negated_lists_stay_together_items_do_not() -> None:
    assert as_sentences("no effusion, consolidation or pneumothorax, mediastinal lymphadenopathy") == (
        "no effusion, consolidation or pneumothorax. mediastinal lymphadenopathy."
    )
    assert as_sentences("possible pneumonia; atelectasis\nno pneumothorax") == (
        "possible pneumonia. atelectasis. no pneumothorax."
    )
    assert as_sentences(" , ;") == ""


def test_abbreviate_is_deterministic_and_rate_bound() -> None:
    text = "Right upper lobe nodule with mediastinal lymphadenopathy, no pneumothorax, bilateral pulmonary embolism."
    assert abbreviate(text, random.Random(3)) == abbreviate(text, random.Random(3))
    assert abbreviate(text, random.Random(3), rate=0.0) == text
    short = abbreviate(text, random.Random(3), rate=1.0)
    assert short in {f"RUL nodule w/ mediastinal LAD, no PTX, {side} PE." for side in ("b/l", "bilat")}
    assert abbreviate("the pelvis and superiorly", random.Random(0), rate=1.0) == "the pelv and superiorly"


def test_abbreviate_then_expand_restores_the_terms() -> None:
    rng = random.Random(7)
    for expansion in set(ABBREVIATIONS.values()):
        text = f"seen {expansion} here"
        assert expand_shorthand(abbreviate(text, rng, rate=1.0)).lower() == text.lower(), expansion
    report = (
        "No pneumothorax. Right lower lobe ground-glass opacity, mediastinal lymph nodes, consistent with metastases."
    )
    for seed in range(5):
        assert expand_shorthand(abbreviate(report, random.Random(seed))).lower() == report.lower()


@pytest.mark.slow
def test_expansion_is_what_the_extractor_needs(extractor: FindingExtractor) -> None:
    found = extractor.extract(as_sentences(expand_shorthand(EXAMPLE)))
    status = {f.name.lower(): f.status for f in found}
    assert status["shaggy lung nodule"] == "present"  # "spiculated nodule"
    assert status["effusion"] == "absent"
    assert status["mediastinal and/or hilar lymph node enlargement"] == "present"  # "mediastinal lymphadenopathy"
    raw = extractor.extract(EXAMPLE)
    assert not any("lymph" in f.name.lower() for f in raw)  # "LAD" alone is no finding
    assert sum(f.status == "present" for f in raw) < sum(f.status == "present" for f in found)
