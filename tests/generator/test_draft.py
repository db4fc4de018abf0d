"""Consensus among retrieved reports: ROUGE-L by hand-checked examples, and which report is chosen."""

from __future__ import annotations

import pytest

from kgreport.generator.draft import (
    Candidate,
    consensus_index,
    draft_text,
    jaccard,
    lcs_length,
    rouge_l,
    select_draft,
    tokens,
)


def test_tokens_and_longest_common_subsequence() -> None:
    assert tokens("No pleural-effusion.") == ["no", "pleural", "effusion"]
    assert lcs_length(["a", "b", "c", "d"], ["a", "c", "d", "e"]) == 3
    assert lcs_length([], ["a"]) == 0


def test_rouge_l_matches_its_definition() -> None:
    a, b = ["a", "b", "c", "d"], ["a", "c", "d", "e", "f"]
    p, r = 3 / 4, 3 / 5
    assert rouge_l(a, b) == pytest.approx((1 + 1.2**2) * p * r / (r + 1.2**2 * p))
    assert rouge_l(a, a) == pytest.approx(1.0)
    assert rouge_l(a, []) == 0.0


def test_consensus_picks_the_report_its_neighbours_echo() -> None:
    reports = [
        "Large left renal mass with calcification.",  # the top hit, unlike the other two
        "Ring enhancing lesion in the right frontal lobe with surrounding edema.",
        "Ring enhancing lesion in the left frontal lobe with edema.",
    ]
    assert consensus_index(reports) in {1, 2}
    # Weights: a neighbour that retrieval scored at zero does not vote.
    assert consensus_index(reports, [0.9, 0.8, 0.0]) == 2
    assert consensus_index(["only one"]) == 0
    assert consensus_index(["same text", "same text"]) == 0  # a tie goes to the better-ranked


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="no reports"):
        consensus_index([])
    with pytest.raises(ValueError, match="scores"):
        consensus_index(["a", "b"], [1.0])


def test_findings_agreement_can_outvote_wording() -> None:
    candidates = [
        Candidate("A", 0.9, "The study shows a mass in the liver.", frozenset({"mass", "liver"})),
        Candidate("B", 0.8, "The study shows a cyst in the kidney.", frozenset({"cyst"})),
        Candidate("C", 0.7, "Hepatic mass, enhancing.", frozenset({"mass", "liver"})),
    ]
    assert select_draft(candidates, lexical_weight=1.0).index in {0, 1}  # wording: A and B share boilerplate
    by_findings = select_draft(candidates, lexical_weight=0.0)
    assert by_findings.index in {0, 2} and by_findings.agreements[1] == min(by_findings.agreements)
    assert jaccard(frozenset(), frozenset()) == 1.0 and jaccard(frozenset({"a"}), frozenset({"b"})) == 0.0


def test_draft_text_shortens_each_section_in_whole_sentences() -> None:
    text = draft_text("One two. Three four. Five.", "Six seven.", findings_words=4, impression_words=5)
    assert text == "Findings: One two. Three four.\nImpression: Six seven."
    # A first sentence longer than the budget is kept whole: a draft never states a cut sentence.
    long = "There is a mass in the left lateral ventricle with multiple septations."
    assert draft_text(long, "", findings_words=3, impression_words=3) == f"Findings: {long}\nImpression: "
