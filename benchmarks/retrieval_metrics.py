"""Measures of retrieval quality over dev queries, with case-clustered bootstrap intervals.

A query is one dev image; the images of one dev case are not independent (same patient, same
disease), so intervals resample whole cases, not images.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np


def norm_label(text: object) -> str:
    """Lower-case alphanumeric words: how diagnoses and categories are compared."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", str(text or "").lower()).split())


def jaccard(a: set[str], b: set[str]) -> float:
    """|a ∩ b| / |a ∪ b|; 0 when both are empty."""
    union = a | b
    return len(a & b) / len(union) if union else 0.0


def chance_of_any(n: int, matching: int, k: int) -> float:
    """Probability that k cases drawn at random from n, of which `matching` share a label, include one."""
    if matching <= 0:
        return 0.0
    if n - matching < k:
        return 1.0
    return 1.0 - math.comb(n - matching, k) / math.comb(n, k)


@dataclass
class QueryOutcomes:
    """Per-query values of each measure (None where a query does not count), with each query's case."""

    case_ids: list[str] = field(default_factory=list)
    values: dict[str, list[float | None]] = field(default_factory=dict)

    def add(self, case_id: str, **measures: float | bool | None) -> None:
        """One query's row; a measure it does not name is None for it."""
        row = len(self.case_ids)
        self.case_ids.append(case_id)
        for name, value in measures.items():
            self.values.setdefault(name, [None] * row).append(None if value is None else float(value))
        for column in self.values.values():
            if len(column) <= row:
                column.append(None)

    def summary(self, resamples: int = 1000, seed: int = 0) -> dict[str, dict[str, float | int]]:
        """{measure: {mean, ci95_low, ci95_high, n}} with a bootstrap over cases."""
        return {name: clustered_mean(self.case_ids, column, resamples, seed) for name, column in self.values.items()}


def clustered_mean(
    clusters: Sequence[str], values: Sequence[float | None], resamples: int = 1000, seed: int = 0
) -> dict[str, float | int]:
    """Mean of the present values and its 95 % percentile interval, resampling whole clusters."""
    by_cluster: dict[str, list[float]] = {}
    for cluster, value in zip(clusters, values, strict=True):
        if value is not None:
            by_cluster.setdefault(cluster, []).append(value)
    if not by_cluster:
        return {"mean": float("nan"), "ci95_low": float("nan"), "ci95_high": float("nan"), "n": 0}
    sums = np.array([sum(v) for v in by_cluster.values()])
    counts = np.array([len(v) for v in by_cluster.values()])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sums), size=(resamples, len(sums)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "mean": round(float(sums.sum() / counts.sum()), 4),
        "ci95_low": round(float(low), 4),
        "ci95_high": round(float(high), 4),
        "n": int(counts.sum()),
    }


def any_match(wanted: str, found: Sequence[str]) -> bool | None:
    """Whether a normalised label is among `found`; None (does not count) when the query has no label."""
    return None if not wanted else wanted in found


def label_counts(labels: Iterable[str]) -> dict[str, int]:
    """How many times each non-empty label occurs."""
    return dict(Counter(label for label in labels if label))
