"""The draft a report starts from when only an image is given: one of the retrieved cases' reports.

Copying the nearest case is the baseline every writer is measured against. Consensus picks, among the
top-k retrieved reports, the one that agrees most with the others (minimum Bayes risk under ROUGE-L,
each other report weighted by its retrieval score): a report that its neighbours echo is less likely
to be one case's idiosyncrasy. Measured on MedPix (`benchmarks.retrieval_quality`), so the writer and
the retrieval benchmark use this one function.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    """Lower-case word tokens (punctuation dropped): what ROUGE-L compares."""
    return TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (one row of the DP table kept)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(a: Sequence[str], b: Sequence[str], beta: float = 1.2) -> float:
    """ROUGE-L F-measure of two token lists (beta 1.2, as pycocoevalcap); 0 when either is empty."""
    lcs = lcs_length(a, b)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def consensus_index(reports: Sequence[str], scores: Sequence[float] | None = None) -> int:
    """Index of the report with the highest score-weighted mean ROUGE-L to the other reports.

    Ties (and a single report) go to the earlier, i.e. better-ranked, one. Negative retrieval scores
    weigh nothing."""
    if not reports:
        raise ValueError("consensus of no reports")
    weights = [max(float(s), 0.0) for s in scores] if scores is not None else [1.0] * len(reports)
    if len(weights) != len(reports):
        raise ValueError(f"{len(reports)} reports but {len(weights)} scores")
    words = [tokens(r) for r in reports]
    best, best_agreement = 0, -1.0
    for i, own in enumerate(words):
        others = [(rouge_l(own, words[j]), weights[j]) for j in range(len(words)) if j != i]
        total = sum(w for _, w in others)
        agreement = sum(r * w for r, w in others) / total if total > 0 else 0.0
        if agreement > best_agreement + 1e-12:
            best, best_agreement = i, agreement
    return best
