"""A ranked differential diagnosis for the impression, blended from three sources, each item citing them.

- `image`: the cases the image alone finds; each votes for its own diagnosis with its similarity score;
- `text`: the cases the notes' text alone finds (notes mode only), voting the same way;
- `knowledge`: the knowledge base's ranking of diagnoses from all the stated findings together
  (`knowledge.ontology.diagnosis_ranking`), each with the findings that support it.

Each source is a distribution over diagnosis names (its shares sum to 1). The blend is their weighted sum;
the weights are computed per case from each source's reliability signals (`generator.source_weights`), so
an item's score says how much each source gave it. Names are merged across sources by a normalised key
("Pulmonary Embolism (PE)" and "pulmonary embolism" are one item), knowledge-base synonyms included.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from kgreport.json_types import JsonObject, UncheckedJson
from kgreport.knowledge.ontology.diagnosis_ranking import RankedDiagnosis, Support

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
_PATIENT = re.compile(
    r"\b\d+[\s-]*(?:y\.?\s?o\.?|years?|yrs?|months?|mos?)\b|\b(?:male|female|man|woman|boy|girl)\b", re.IGNORECASE
)


def short_diagnosis(name: str) -> str:
    """A diagnosis as a report names it: its first clause ("Cerebral infarction encompassing the left MCA ..."
    → "Cerebral infarction"); "" for a description too long to be a name."""
    short = _CLAUSE.split(name.removesuffix(" ...").strip(), maxsplit=1)[0].strip().rstrip(".,;:")
    patient = _PATIENT.search(short)  # "64 y.o. female", "Melanoma in a 45-year-old man": who, not what
    if patient:
        short = re.sub(r"\s+(?:in|of)(?:\s+(?:an?|the))?\s*$", "", short[: patient.start()].rstrip(" ,;:-")).strip()
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


SOURCES = ("image", "text", "knowledge")


@dataclass
class DifferentialItem:
    name: str
    score: float
    case_ids: tuple[str, ...] = ()  # similar cases with this diagnosis
    concept_ids: tuple[str, ...] = ()  # stated findings' concepts (citations in the report)
    diagnosis_id: str | None = None  # the graph's concept id of the diagnosis, where it has one
    sources: dict[str, float] = field(default_factory=dict)  # source → its weighted share in `score`
    supports: tuple[Support, ...] = ()  # knowledge: the stated findings that suggest it, and from where
    unexplained: tuple[str, ...] = ()  # knowledge: stated findings it does not explain
    synonyms: tuple[str, ...] = ()

    def as_json(self) -> JsonObject:
        return {
            "name": self.name,
            "score": round(self.score, 4),
            "sources": {k: round(v, 4) for k, v in self.sources.items()},
            "case_ids": list(self.case_ids),
            "concept_ids": list(self.concept_ids),
            "diagnosis_id": self.diagnosis_id,
            "synonyms": list(self.synonyms),  # other names it answers to (knowledge base, merged names)
            "supports": [s.as_json() for s in self.supports],
            "unexplained": list(self.unexplained),
        }

    @classmethod
    def from_json(cls, data: UncheckedJson) -> DifferentialItem:
        return cls(
            name=str(data["name"]),
            score=float(data["score"]),
            sources={str(k): float(v) for k, v in dict(data.get("sources") or {}).items()},
            case_ids=tuple(map(str, data.get("case_ids") or ())),
            concept_ids=tuple(map(str, data.get("concept_ids") or ())),
            diagnosis_id=None if data.get("diagnosis_id") is None else str(data["diagnosis_id"]),
            synonyms=tuple(map(str, data.get("synonyms") or ())),
            supports=tuple(Support.from_json(s) for s in data.get("supports") or ()),
            unexplained=tuple(map(str, data.get("unexplained") or ())),
        )


@dataclass
class SourceVotes:
    """One source's votes: diagnosis name → share (summing to 1), with what backs each name."""

    source: str
    shares: dict[str, float] = field(default_factory=dict)
    case_ids: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ranked: dict[str, RankedDiagnosis] = field(default_factory=dict)  # knowledge: the ranked item
    agreement: float = 0.0  # retrieval: share of the cases voting for the top name

    def top(self, n: int) -> list[float]:
        """The `n` largest shares, padded with 0."""
        values = sorted(self.shares.values(), reverse=True)[:n]
        return values + [0.0] * (n - len(values))


def case_votes(source: str, cases: Sequence[CaseDiagnosis]) -> SourceVotes:
    """Each case votes for its diagnosis (named as a report would: `short_diagnosis`) with its score."""
    scores: dict[str, float] = {}
    ids: dict[str, list[str]] = {}
    keys: dict[str, str] = {}
    for case in cases:
        name = short_diagnosis(diagnosis_name(case.diagnosis))
        if not name:
            continue
        key = next((k for k in keys if same_diagnosis(k, name)), None) or name
        keys.setdefault(key, key)
        scores[key] = scores.get(key, 0.0) + max(float(case.score), 0.0)
        ids.setdefault(key, []).append(case.case_id)
    total = sum(scores.values())
    if total <= 0:
        return SourceVotes(source)
    top = max(scores, key=lambda k: scores[k])
    return SourceVotes(
        source,
        {k: v / total for k, v in scores.items()},
        {k: tuple(v) for k, v in ids.items()},
        agreement=len(ids[top]) / max(len(cases), 1),
    )


def knowledge_votes(ranked: Sequence[RankedDiagnosis]) -> SourceVotes:
    """The knowledge base's ranking as shares of its scores."""
    total = sum(d.score for d in ranked)
    if total <= 0:
        return SourceVotes("knowledge")
    return SourceVotes("knowledge", {d.name: d.score / total for d in ranked}, ranked={d.name: d for d in ranked})


def fuse(
    votes: Sequence[SourceVotes],
    weights: Mapping[str, float],
    *,
    limit: int,
    denied: Callable[[str], bool] | None = None,
) -> list[DifferentialItem]:
    """The `limit` best names by the weighted sum of the sources' shares, leaving out a name `denied` says the
    notes deny; ties go to the name seen first."""
    items: list[DifferentialItem] = []

    def item_for(name: str, synonyms: Sequence[str]) -> DifferentialItem:
        names = [name, *synonyms]
        for item in items:
            if any(same_diagnosis(a, b) for a in names for b in (item.name, *item.synonyms)):
                # One diagnosis by two names: the item answers to both.
                item.synonyms = tuple(dict.fromkeys([*item.synonyms, *(n for n in names if n != item.name)]))
                return item
        items.append(DifferentialItem(name.strip().rstrip(".;,").strip(), 0.0, synonyms=tuple(synonyms)))
        return items[-1]

    for source in votes:
        weight = float(weights.get(source.source, 0.0))
        for name, share in source.shares.items():
            ranked = source.ranked.get(name)
            item = item_for(name, ranked.synonyms if ranked else ())
            item.score += weight * share
            item.sources[source.source] = item.sources.get(source.source, 0.0) + weight * share
            item.case_ids = tuple(dict.fromkeys([*item.case_ids, *source.case_ids.get(name, ())]))
            if ranked:
                item.supports, item.unexplained = ranked.supports, ranked.unexplained
                item.diagnosis_id = item.diagnosis_id or ranked.concept_id
                item.synonyms = tuple(dict.fromkeys([*item.synonyms, *ranked.synonyms]))
    order = {id(item): n for n, item in enumerate(items)}
    kept = sorted(
        (i for i in items if i.score > 0 and not (denied and denied(i.name))), key=lambda i: (-i.score, order[id(i)])
    )
    return kept[:limit]


def recall_at(differential: Sequence[DifferentialItem], truth: str, k: int) -> bool:
    """Whether the true diagnosis is among the first `k` items (by `same_diagnosis`)."""
    return any(same_diagnosis(item.name, truth) for item in differential[:k])
