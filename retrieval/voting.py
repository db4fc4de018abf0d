"""kNN voting: predict a label (modality, body region) from the labels of the nearest stored images."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence


def vote_shares(labels: Sequence[str | None], scores: Sequence[float]) -> dict[str, float]:
    """Each non-empty label's share of the neighbours' similarity weight (empty if none weighs anything).

    Negative similarities carry no weight: an unrelated image should not vote."""
    weights: dict[str, float] = defaultdict(float)
    for label, score in zip(labels, scores, strict=True):
        if label:
            weights[label] += max(float(score), 0.0)
    total = sum(weights.values())
    return {label: w / total for label, w in weights.items()} if total > 0 else {}


def winner(shares: Mapping[str, float]) -> tuple[str | None, float]:
    """The label with the largest share, and that share; (None, 0.0) for no shares."""
    if not shares:
        return None, 0.0
    label = max(shares, key=lambda k: shares[k])
    return label, shares[label]


def blend(shares: Mapping[str, float], probabilities: Mapping[str, float], weight: float) -> dict[str, float]:
    """(1 − weight) · vote shares + weight · a classifier's probabilities, over the labels of either."""
    labels = set(shares) | set(probabilities)
    return {label: (1 - weight) * shares.get(label, 0.0) + weight * probabilities.get(label, 0.0) for label in labels}


def vote(labels: Sequence[str | None], scores: Sequence[float]) -> tuple[str | None, float]:
    """Similarity-weighted majority of the non-empty labels; confidence is the winner's share of weight.

    If every neighbour is unlabelled or dissimilar the answer is (None, 0.0)."""
    return winner(vote_shares(labels, scores))
