"""A ranked differential diagnosis for the impression, each item citing where it came from.

Two sources, as a radiologist would weigh them:

- the similar cases: each retrieved case votes for its own diagnosis with its similarity score (a case
  found by the image and by the notes together is the strongest hint the archive has);
- the graph: each stated finding's differential (diagnoses the ontology relates to it, and diagnoses of
  archive cases that state it present), one vote per finding.

Scores are the weighted sum of the two vote shares; an item keeps the ids of the cases and of the finding
concepts behind it, so the report can cite them. Names from the two sources are merged by a normalised
key ("Pulmonary Embolism (PE)" and "pulmonary embolism" are one item).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_PARENTHESES = re.compile(r"\([^)]*\)")
_WORD = re.compile(r"[a-z0-9]+")
_FILLER = frozenset({"a", "an", "the", "of", "with", "and", "or", "in", "on", "to", "for", "by", "s"})


_LABEL = re.compile(r"^\s*(?:final\s+|case\s+)?diagnosis\s*:\s*", re.IGNORECASE)
NAME_WORDS = 12  # a longer "diagnosis" is a description: its first words name it


def diagnosis_name(text: str) -> str:
    """A case's diagnosis as a list item: label dropped, first line, at most `NAME_WORDS` words."""
    line = next((x for x in _LABEL.sub("", text or "").splitlines() if x.strip()), "")
    words = line.split()
    return " ".join(words[:NAME_WORDS]) + (" ..." if len(words) > NAME_WORDS else "")


_CLAUSE = re.compile(
    r"\s*(?:[,;:(\[]|\s-\s|\s(?:with|encompassing|secondary to|due to|involving|and we|patient)\s)", re.IGNORECASE
)
SHORT_NAME_WORDS = 8


def short_diagnosis(name: str) -> str:
    """A diagnosis as a report names it: its first clause ("Cerebral infarction encompassing the left MCA ..."
    → "Cerebral infarction"); "" for a description too long to be a name."""
    short = _CLAUSE.split(name.removesuffix(" ...").strip(), maxsplit=1)[0].strip().rstrip(".,;:")
    return short if 0 < len(short.split()) <= SHORT_NAME_WORDS else ""


def diagnosis_key(name: str) -> str:
    """Lower-case content words, parentheses dropped, in order: the identity of a diagnosis name."""
    return " ".join(w for w in _WORD.findall(_PARENTHESES.sub(" ", name.lower())) if w not in _FILLER)


def same_diagnosis(a: str, b: str, *, overlap: float = 0.5) -> bool:
    """Whether two diagnosis names mean the same disease: equal keys, or content words overlapping by at
    least `overlap` (Jaccard) — "Atypical pulmonary hamartoma" and "Pulmonary hamartoma" match."""
    ka, kb = set(diagnosis_key(a).split()), set(diagnosis_key(b).split())
    if not ka or not kb:
        return False
    return ka == kb or len(ka & kb) / len(ka | kb) >= overlap


@dataclass(frozen=True)
class CaseDiagnosis:
    """A retrieved case's diagnosis, with its similarity to the query."""

    case_id: str
    score: float
    diagnosis: str


@dataclass
class DifferentialItem:
    name: str
    score: float
    case_ids: tuple[str, ...] = ()  # similar cases with this diagnosis
    concept_ids: tuple[str, ...] = ()  # stated findings whose graph differential names it
    diagnosis_id: str | None = None  # the graph's concept id of the diagnosis, where it has one

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "score": round(self.score, 4),
            "case_ids": list(self.case_ids),
            "concept_ids": list(self.concept_ids),
            "diagnosis_id": self.diagnosis_id,
        }


@dataclass
class _Votes:
    name: str
    cases: dict[str, float] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    diagnosis_id: str | None = None


def rank_differential(
    cases: Sequence[CaseDiagnosis],
    graph_differentials: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    case_weight: float = 1.0,
    graph_weight: float = 1.0,
    limit: int = 5,
) -> list[DifferentialItem]:
    """The `limit` best diagnoses from the cases' votes and the graph's differentials of each finding.

    `graph_differentials` maps a stated finding's concept id to its differential (items with `name` and
    `id`, as `knowledge.grounding.Grounding.differential_diagnoses` gives them). Ties go to the name seen
    first (cases first, in rank order)."""
    votes: dict[str, _Votes] = {}

    def entry(name: str) -> _Votes | None:
        key = diagnosis_key(name)
        if not key:
            return None
        if key not in votes:
            match = next((k for k in votes if same_diagnosis(k, key)), None)
            if match is not None:
                return votes[match]
            votes[key] = _Votes(name.strip().rstrip(".;,").strip())
        return votes[key]

    for case in cases:
        if (item := entry(diagnosis_name(case.diagnosis))) is not None:
            item.cases.setdefault(case.case_id, max(float(case.score), 0.0))
    for concept_id, differential in graph_differentials.items():
        for dx in differential:
            if (item := entry(str(dx.get("name") or ""))) is not None and concept_id not in item.findings:
                item.findings.append(concept_id)
                item.diagnosis_id = item.diagnosis_id or (str(dx["id"]) if dx.get("id") else None)
    case_total = sum(max(float(c.score), 0.0) for c in cases) or 1.0
    finding_total = sum(1 for d in graph_differentials.values() if d) or 1
    ranked = [
        DifferentialItem(
            name=v.name,
            score=case_weight * sum(v.cases.values()) / case_total + graph_weight * len(v.findings) / finding_total,
            case_ids=tuple(v.cases),
            concept_ids=tuple(v.findings),
            diagnosis_id=v.diagnosis_id,
        )
        for v in votes.values()
    ]
    order = {id(item): n for n, item in enumerate(ranked)}
    ranked.sort(key=lambda item: (-item.score, order[id(item)]))
    return ranked[:limit]


def recall_at(differential: Sequence[DifferentialItem], truth: str, k: int) -> bool:
    """Whether the true diagnosis is among the first `k` items (by `same_diagnosis`)."""
    return any(same_diagnosis(item.name, truth) for item in differential[:k])
