"""Report metrics: language scores (pycocoevalcap), RadLex finding F1, paired bootstrap, coverage curves.

"RadLex finding F1" is our extractor's (`knowledge.extraction`): the present finding concepts it finds in a
generated and a reference report. It is not CheXbert's or RadGraph's, and its figures are not comparable
with theirs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

HEADING = re.compile(r"\b(findings|impression)\s*:", re.IGNORECASE)


def plain(text: str) -> str:
    """The report without its section headings, one line."""
    return " ".join(HEADING.sub(" ", text).split())


def language_scores(references: list[str], hypotheses: list[str]) -> dict[str, tuple[float, list[float]]]:
    """{metric: (corpus score, per-report scores)} from pycocoevalcap."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    # METEOR's Java process stalls on an empty hypothesis: an empty report is scored as the word "none".
    gts = tokenizer.tokenize({i: [{"caption": r}] for i, r in enumerate(references)})
    res = tokenizer.tokenize({i: [{"caption": h or "none"}] for i, h in enumerate(hypotheses)})
    res = {i: [h or "none" for h in hs] for i, hs in res.items()}
    out: dict[str, tuple[float, list[float]]] = {}
    bleu, bleu_each = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        out[f"BLEU-{n + 1}"] = (float(bleu[n]), [float(x) for x in bleu_each[n]])
    for name, scorer in (("METEOR", Meteor()), ("ROUGE-L", Rouge()), ("CIDEr", Cider())):
        score, each = scorer.compute_score(gts, res)
        out[name] = (float(score), [float(x) for x in each])
    return out


def finding_f1(extractor: Any, references: list[str], hypotheses: list[str]) -> dict[str, Any]:
    """RadLex finding F1 (our extractor's, not CheXbert's or RadGraph's): per-report F1 of the present finding
    concepts (mean and per report; two reports with no finding score 1) and micro P / R / F1."""

    def present(texts: list[str]) -> list[set[str]]:
        return [{f.concept_id for f in fs if f.status == "present"} for fs in extractor.extract_many(texts)]

    refs, hyps = present(references), present(hypotheses)
    each = [1.0 if not r and not h else 2 * len(r & h) / (len(r) + len(h)) for r, h in zip(refs, hyps, strict=True)]
    tp = sum(len(r & h) for r, h in zip(refs, hyps, strict=True))
    p = tp / max(1, sum(len(h) for h in hyps))
    r = tp / max(1, sum(len(x) for x in refs))
    micro = 2 * p * r / (p + r) if p + r else 0.0
    return {"mean": float(np.mean(each)), "each": each, "micro_p": p, "micro_r": r, "micro_f1": micro}


def paired_bootstrap(a: list[float], b: list[float], resamples: int, seed: int = 0) -> dict[str, float]:
    """Mean of a − b over images, and its 95% percentile interval from `resamples` paired resamples."""
    diff = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "mean": float(diff.mean()),
        "ci95_low": float(low),
        "ci95_high": float(high),
        "excludes_0": bool(low > 0 or high < 0),
    }


def coverage_curve(
    confidence: Sequence[float],
    quality: dict[str, Sequence[float]],
    steps: Sequence[float] = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0),
) -> list[dict[str, float]]:
    """Mean quality of the most confident fraction of queries, for each fraction in `steps` (ties broken by order)."""
    order = np.argsort(-np.asarray(confidence, dtype=float), kind="stable")
    rows = []
    for fraction in steps:
        kept = order[: max(1, round(fraction * len(order)))]
        row = {"coverage": fraction, "threshold": float(np.asarray(confidence)[kept[-1]])}
        row.update({name: float(np.mean(np.asarray(values, dtype=float)[kept])) for name, values in quality.items()})
        rows.append(row)
    return rows


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); nan when either side is constant."""
    from scipy.stats import spearmanr

    if len(set(a)) < 2 or len(set(b)) < 2:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def spread(values: Sequence[float]) -> dict[str, float]:
    x = np.asarray(values, dtype=float)
    if not len(x):
        return {}
    p10, median, p90 = np.percentile(x, [10, 50, 90])
    return {
        "min": float(x.min()),
        "p10": float(p10),
        "median": float(median),
        "p90": float(p90),
        "max": float(x.max()),
        "std": float(x.std()),
    }


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve (the chance a positive outranks a negative; ties count half); nan with one class."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not positives or not negatives:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return float(wins / (len(positives) * len(negatives)))
