import pytest

from kgreport.retrieval.voting import vote


def test_weighted_majority_and_confidence() -> None:
    label, confidence = vote(["CT", "MR", "MR", "CT"], [0.9, 0.2, 0.2, 0.7])
    assert label == "CT"
    assert abs(confidence - 1.6 / 2.0) < 1e-9


def test_unlabelled_or_dissimilar_neighbours_give_no_answer() -> None:
    assert vote([None, ""], [0.9, 0.8]) == (None, 0.0)
    assert vote(["CT"], [-0.3]) == (None, 0.0)


def test_shares_sum_to_one_and_blend_with_a_classifier() -> None:
    from kgreport.retrieval.voting import blend, vote_shares, winner

    shares = vote_shares(["Head", "Thorax", "Head"], [0.5, 0.5, 0.0])
    assert shares == {"Head": 0.5, "Thorax": 0.5}
    blended = blend(shares, {"Thorax": 0.8, "Abdomen": 0.2}, 0.5)
    assert blended == pytest.approx({"Head": 0.25, "Thorax": 0.65, "Abdomen": 0.1})
    assert winner(blended) == ("Thorax", pytest.approx(0.65))
    assert winner({}) == (None, 0.0)
