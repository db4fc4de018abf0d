from retrieval.voting import vote


def test_weighted_majority_and_confidence() -> None:
    label, confidence = vote(["CT", "MR", "MR", "CT"], [0.9, 0.2, 0.2, 0.7])
    assert label == "CT"
    assert abs(confidence - 1.6 / 2.0) < 1e-9


def test_unlabelled_or_dissimilar_neighbours_give_no_answer() -> None:
    assert vote([None, ""], [0.9, 0.8]) == (None, 0.0)
    assert vote(["CT"], [-0.3]) == (None, 0.0)
