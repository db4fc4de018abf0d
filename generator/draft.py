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
from dataclasses import dataclass

from kgreport.generator.config import WriterConfig

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
    candidates = [Candidate(str(i), 1.0, r, frozenset()) for i, r in enumerate(reports)]
    return select_draft(candidates, scores, lexical_weight=1.0).index


# -- candidates: lexical plus finding agreement --------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One retrieved case's report as a possible draft; `present` = the concepts its text states present."""

    case_id: str
    score: float
    text: str
    present: frozenset[str]


@dataclass(frozen=True)
class Selection:
    """The chosen draft and why: each candidate's agreement with the others (same order as given)."""

    index: int
    agreements: tuple[float, ...]

    @property
    def agreement(self) -> float:
        return self.agreements[self.index]


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a ∩ b| / |a ∪ b|; two empty sets agree (neither states a finding)."""
    return len(a & b) / len(a | b) if a or b else 1.0


def select_draft(
    candidates: Sequence[Candidate],
    scores: Sequence[float] | None = None,
    *,
    lexical_weight: float = WriterConfig.lexical_weight,
) -> Selection:
    """The candidate that agrees most with the others, each other weighted by its retrieval score.

    Agreement of two reports = `lexical_weight` · ROUGE-L + (1 − `lexical_weight`) · Jaccard of their
    present findings: wording alone rewards boilerplate, findings alone ignore everything the extractor
    does not know. Ties (and a single candidate) go to the better-ranked one; negative scores weigh
    nothing; `scores` defaults to each candidate's own."""
    if not candidates:
        raise ValueError("consensus of no reports")
    raw = scores if scores is not None else [c.score for c in candidates]
    if len(raw) != len(candidates):
        raise ValueError(f"{len(candidates)} reports but {len(raw)} scores")
    weights = [max(float(s), 0.0) for s in raw]
    words = [tokens(c.text) for c in candidates]
    agreements = []
    for i, own in enumerate(words):
        others = [
            (lexical_weight * rouge_l(own, words[j]) + (1 - lexical_weight) * jaccard(candidates[i].present, c.present),
             weights[j])
            for j, c in enumerate(candidates) if j != i
        ]  # fmt: skip
        total = sum(w for _, w in others)
        agreements.append(sum(a * w for a, w in others) / total if total > 0 else 0.0)
    best = 0
    for i, value in enumerate(agreements):
        if value > agreements[best] + 1e-12:
            best = i
    return Selection(best, tuple(agreements))


def draft_text(findings: str, impression: str, *, findings_words: int = 60, impression_words: int = 20) -> str:
    """A report in the writer's format, each section shortened to about a word budget in whole sentences."""
    return f"Findings: {cut_words(findings, findings_words)}\nImpression: {cut_words(impression, impression_words)}"


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def cut_words(text: str, limit: int) -> str:
    """The first whole sentences of `text` within `limit` words; the first sentence whole when it alone is
    longer (a sentence is never cut: a copied draft would state it cut)."""
    kept: list[str] = []
    count = 0
    for sentence in _SENTENCE_END.split(" ".join(text.split())):
        words = len(sentence.split())
        if kept and count + words > limit:
            break
        kept.append(sentence)
        count += words
    return " ".join(kept)
