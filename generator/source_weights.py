"""Per-case weights of the differential's sources, from signals of how far each can be trusted on this case.

This is the dynamic fusion that changes the answer: the old soft-prompt gate weighed image against reports
inside the LLM, which ignored it (median 4e-11). Here the weights blend the three differential sources
(`generator.differential`) directly, so a different weight gives a different ranking.

Each source's weight is a softmax over the sources that voted, of a linear score of its own signals:

- retrieval (`image`, `text`): the top name's share, its margin over the second, and the share of the
  cases that agree on it (five similar cases all naming one diagnosis are worth more than five names);
- `knowledge`: the top diagnosis's share and margin, how many stated findings it explains, and how many
  findings were stated at all;
- all: whether the radiologist's notes were given (notes mode).

The coefficients are fitted on train (maximum likelihood of the true diagnosis under the blend, with an
L2 penalty) and saved as JSON; `FixedWeights` is the same blend with one weight per source for every case.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kgreport.generator.config import WriterUnreadableError
from kgreport.generator.differential import SOURCES, SourceVotes

SOURCE_WEIGHTS_JSON = "source_weights.json"
Weigher = Callable[[Sequence[SourceVotes]], dict[str, float]]  # a case's votes → each voting source's weight


def signals(votes: SourceVotes, case: Sequence[SourceVotes] = ()) -> dict[str, float]:
    """The reliability signals of one source's votes on one case (see the module docstring); `case` is all
    the case's votes, for what the case itself says (whether notes were given: a text source is there)."""
    first, second = votes.top(2)
    out = {"top": first, "margin": first - second, "notes": float(any(v.source == "text" for v in case))}
    if votes.source == "knowledge":
        best = max(votes.ranked.values(), key=lambda d: d.score, default=None)
        explained = len(best.supports) if best else 0
        stated = explained + (len(best.unexplained) if best else 0)
        out.update(explained=math.log1p(explained), stated=math.log1p(stated))
    else:
        out["agreement"] = votes.agreement
    return out


@dataclass(frozen=True)
class FixedWeights:
    """The same weight per source for every case (the ablation's fixed blends)."""

    weights: Mapping[str, float]

    def __call__(self, votes: Sequence[SourceVotes]) -> dict[str, float]:
        present = [v.source for v in votes if v.shares]
        total = sum(self.weights.get(s, 0.0) for s in present)
        return {s: self.weights.get(s, 0.0) / total for s in present} if total > 0 else {}


@dataclass
class SourceWeights:
    """Per-case weights: softmax over the voting sources of bias + coefficients · signals."""

    coefficients: dict[str, dict[str, float]] = field(default_factory=dict)  # source → {"bias" | signal: coef}
    fitted_on: str = ""

    def __call__(self, votes: Sequence[SourceVotes]) -> dict[str, float]:
        logits = {}
        for v in votes:
            if not v.shares:
                continue
            coef = self.coefficients.get(v.source, {})
            logits[v.source] = coef.get("bias", 0.0) + sum(coef.get(k, 0.0) * x for k, x in signals(v, votes).items())
        if not logits:
            return {}
        top = max(logits.values())
        exp = {s: math.exp(x - top) for s, x in logits.items()}
        total = sum(exp.values())
        return {s: e / total for s, e in exp.items()}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def for_writer(cls, folder: Path) -> SourceWeights:
        """The writer folder's `source_weights.json`; equal weights for a writer that has none."""
        path = folder / SOURCE_WEIGHTS_JSON
        return cls.load(path) if path.is_file() else cls({}, fitted_on="none: equal weights")

    @classmethod
    def load(cls, path: Path) -> SourceWeights:
        data = json.loads(path.read_text())
        unknown = set(data.get("coefficients", {})) - set(SOURCES)
        if unknown:
            raise WriterUnreadableError(
                f"{path}: unknown differential source(s) {sorted(unknown)}; known: {list(SOURCES)}"
            )
        return cls(**data)


def fit_source_weights(
    cases: Sequence[tuple[Sequence[SourceVotes], Mapping[str, float]]],
    *,
    l2: float = 0.01,
    steps: int = 400,
    fitted_on: str = "",
) -> SourceWeights:
    """Coefficients maximising the mean log share of the true diagnosis under the blend.

    `cases`: per case, its sources' votes and, per source, the share that source gave the true diagnosis
    (0 where it did not name it). Cases where no source names the truth say nothing about the weights and
    are skipped."""
    import torch

    useful = [(votes, truth) for votes, truth in cases if any(truth.get(v.source, 0.0) > 0 for v in votes)]
    names = {
        s: sorted({k for votes, _ in useful for v in votes if v.source == s for k in signals(v, votes)})
        for s in SOURCES
    }
    params = {s: torch.zeros(len(names[s]) + 1, requires_grad=True) for s in SOURCES}
    rows = []
    for votes, truth in useful:
        voting = [v for v in votes if v.shares]
        x = [torch.tensor([1.0, *[signals(v, votes).get(k, 0.0) for k in names[v.source]]]) for v in voting]
        p = torch.tensor([truth.get(v.source, 0.0) for v in voting])
        rows.append(([v.source for v in voting], x, p))
    optimiser = torch.optim.Adam(list(params.values()), lr=0.05)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = torch.tensor(0.0)
        for sources, x, p in rows:
            logits = torch.stack([params[s] @ xi for s, xi in zip(sources, x, strict=True)])
            loss = loss - torch.log((torch.softmax(logits, 0) * p).sum() + 1e-6)
        loss = loss / max(len(rows), 1) + l2 * sum((w[1:] ** 2).sum() for w in params.values())
        loss.backward()
        optimiser.step()
    coefficients = {
        s: {"bias": round(float(w[0]), 4), **{k: round(float(c), 4) for k, c in zip(names[s], w[1:], strict=True)}}
        for s, w in ((s, w.detach()) for s, w in params.items())
    }
    return SourceWeights(coefficients, fitted_on=fitted_on)
