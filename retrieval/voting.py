"""kNN voting: predict a label (modality, body region) from the labels of the nearest stored images."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence


def vote(labels: Sequence[str | None], scores: Sequence[float]) -> tuple[str | None, float]:
    """Similarity-weighted majority of the non-empty labels; confidence is the winner's share of weight.

    Negative similarities carry no weight (an unrelated image should not vote); if every neighbour
    is unlabelled or dissimilar the answer is (None, 0.0).
    """
    weights: dict[str, float] = defaultdict(float)
    for label, score in zip(labels, scores, strict=True):
        if label:
            weights[label] += max(float(score), 0.0)
    total = sum(weights.values())
    if total <= 0:
        return None, 0.0
    label = max(weights, key=lambda k: weights[k])
    return label, weights[label] / total
