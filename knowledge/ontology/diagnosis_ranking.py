"""A ranked differential from all the stated findings together, over the finding → diagnosis knowledge base.

A radiologist reads the findings as a constellation: the diagnosis that explains more of them ranks higher,
a specific sign ("railroad track calcifications") counts more than a generic one ("mass"), and a diagnosis
whose defining finding the notes deny is not offered. So, for each stated finding (a notes item, or a
finding the similar cases agree on):

1. it is matched to the knowledge base's findings by their words: the share of a KB finding's word weight
   (inverse document frequency over the KB's findings, words reduced to a crude stem) that the stated text
   covers. "enlarged lateral ventricles" covers "ventricular enlargement"; "mass" alone covers little of
   "spiculated mass". Diagnosis names are matched the same way, so a finding that names a disease
   ("hydronephrosis") supports it.
2. each diagnosis takes, per stated finding, its best-matching KB finding only: a finding explains a
   diagnosis once, however many near-duplicate rows the tables have. The support is the match × the KB
   finding's word weight (rare and long phrases count more: that is its specificity here), doubled where
   the table marks it pathognomonic. The tables' own 1 / n specificity is kept (`SPECIFICITY_POWER`) but
   off: most rows name one pathology, and on train it lowered the top 5.
3. the study's modality filters the findings only another kind of study can show ("T2 hyperintense" is not
   a CT finding, "hypoechoic" not an MR one); the study's body system weighs down edges of another system.
4. a stated absence of a pathognomonic finding (or of the diagnosis itself) removes the diagnosis.

The score is the sum of the supports, so explaining two findings beats explaining one; each ranked item
keeps its supports (stated text, KB finding, source) and the stated findings it does not explain.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from kgreport.json_types import JsonObject, UncheckedJson
from kgreport.knowledge.ontology.diagnosis_kb import DiagnosisKB, Suggestion, diagnosis_key, finding_key

# The tables map most findings to one pathology, so their 1 / n says little: on train it lowered the top 5
# (0.153 against 0.173 without it).
SPECIFICITY_POWER = 0.0
PATHOGNOMONIC_WEIGHT = 2.0
MIN_COVER = 0.4  # share of a KB finding's word weight a stated finding must cover to match it
# Words a match must share with a KB finding of more words: 2 ("middle" alone would not match "mediastinal
# mass (middle)") measured worse on train (top 5 0.153 against 0.180), so one is enough.
MIN_SHARED = 1
MIN_WORD_WEIGHT = 2.5  # a match needs at least one covered word at least this rare ("mass" alone is not a match)
NAME_SOURCE = "diagnosis name"
REGION_MISMATCH = 0.2  # an edge from another body system counts this much (the predicted region can be wrong)

# Body systems, named by the words of a table's region ("Neuroradiology", "Liver") or an archive's
# ("Head", "Spine and Muscles", "CHEST"): a spine study is read by neuro and MSK alike.
_SYSTEM_WORDS = {
    "neuro": ("neuro", "brain", "head", "skull", "spine", "cord", "orbit"),
    "chest": ("thora", "chest", "lung", "pulmon", "cardi", "heart", "breast", "mediast"),
    "abdomen": ("abdom", "gastro", "liver", "hepat", "gallbladder", "biliar", "pancrea", "spleen", "bowel", "colon"),
    "urogenital": ("genito", "urinar", "kidney", "renal", "bladder", "prostat", "reproduct", "pelvi", "adrenal",
                   "gu", "uter", "ovar", "testi", "scrot"),
    "msk": ("musculo", "bone", "muscle", "spine", "joint", "knee", "shoulder", "hip", "extremit", "msk", "skelet"),
}  # fmt: skip

_WORD = re.compile(r"[a-z0-9]+")
# Function words, and the words of side, place and degree: "bilateral" or "large" alone says nothing of a disease.
_STOP = frozenset(
    _WORD.findall(
        "a an the of with and or in on to for by at as is are be from into within without no not than this that "
        "its it seen noted both there which may can also very more most other e g eg i ie "
        "right left bilateral unilateral lateral medial anterior posterior superior inferior upper lower proximal "
        "distal diffuse diffusely multiple single small large mild moderate severe approximately"
    )
)
# Words only one kind of study can show: a finding that uses them cannot apply to a study of another kind
# ("T2 hyperintense" on CT, "hypoechoic" on MR). Other findings apply to any study, the table's modality
# being where they are usually described ("dilated esophagus" is a barium finding and a CT finding alike).
_MODALITY_ONLY = {
    "MR": ("t1", "t2", "flair", "dwi", "adc", "stir", "gadolinium", "hyperintens", "hypointens", "isointens",
           "diffusion", "signal", "sequence", "susceptibil", "spectroscop"),
    "US": ("echo", "hyperecho", "hypoecho", "anecho", "isoecho", "acoustic", "doppler", "shadowing", "sonograph"),
    "NM": ("uptake", "fdg", "avid", "suv", "scintigra", "mibg", "tracer", "i 131", "octreotide", "hot", "cold"),
}  # fmt: skip
# Longest first: "ations" before "ation" before "s".
_SUFFIXES = ("ations", "ation", "ities", "ity", "ements", "ement", "ments", "ment", "ness", "ings", "ing",
             "ally", "ies", "ied", "ed", "es", "al", "ic", "ly", "y", "s", "e")  # fmt: skip


def systems(region: str | None) -> frozenset[str]:
    """The body systems a region names; empty for none or a region that is not one ("Nuclear Medicine")."""
    words = _WORD.findall((region or "").lower())
    return frozenset(system for system, starts in _SYSTEM_WORDS.items() if any(w.startswith(starts) for w in words))


def _shown_only_on(text: str) -> frozenset[str]:
    """The kinds of study whose own words `text` uses ("T2 hyperintense": MR); empty for words any can show."""
    words = " ".join(_WORD.findall(text.lower()))
    return frozenset(m for m, starts in _MODALITY_ONLY.items() if any(re.search(rf"\b{w}", words) for w in starts))


def stem(word: str) -> str:
    """A crude stem, the same on both sides of a match: "enhancing", "enhancement", "enhances" → "enhanc"."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def stems(text: str) -> frozenset[str]:
    """The content words of `text`, stemmed."""
    return frozenset(stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP and not w.isdigit())


@dataclass(frozen=True)
class StatedFinding:
    """A finding as the notes (or the similar cases) state it."""

    text: str  # "enlarged lateral ventricles"
    status: str = "present"  # present | absent | uncertain


@dataclass(frozen=True)
class Support:
    """Why a diagnosis is on the list: a stated finding matched a KB finding that suggests it."""

    stated: str
    kb_finding: str
    source: str
    weight: float
    pathognomonic: bool = False

    def as_json(self) -> JsonObject:
        return {
            "stated": self.stated,
            "kb_finding": self.kb_finding,
            "source": self.source,
            "weight": round(self.weight, 4),
            "pathognomonic": self.pathognomonic,
        }

    @classmethod
    def from_json(cls, data: UncheckedJson) -> Support:
        return cls(
            stated=str(data["stated"]),
            kb_finding=str(data["kb_finding"]),
            source=str(data["source"]),
            weight=float(data["weight"]),
            pathognomonic=bool(data.get("pathognomonic", False)),
        )


@dataclass
class RankedDiagnosis:
    name: str
    score: float
    synonyms: tuple[str, ...] = ()
    supports: tuple[Support, ...] = ()
    unexplained: tuple[str, ...] = ()  # stated present findings this diagnosis does not explain
    concept_id: str | None = None  # the ontology concept of the diagnosis (SAME_AS), where there is one


@dataclass(frozen=True)
class _Term:
    """A KB finding or a diagnosis name, as words with weights."""

    text: str
    words: frozenset[str]
    total: float  # sum of its words' weights
    modalities: frozenset[str] = frozenset()  # the only kinds of study that can show it (`_MODALITY_ONLY`); empty: any


@dataclass
class _Edge:
    term: int
    diagnosis: str  # key
    weight: float
    source: str
    modalities: tuple[str, ...]
    pathognomonic: bool
    systems: frozenset[str] = frozenset()  # empty: any region


@dataclass
class DiagnosisRanker:
    """The knowledge base indexed by word, for ranking diagnoses from stated findings (build once, rank often)."""

    kb: DiagnosisKB
    specificity_power: float = SPECIFICITY_POWER
    min_cover: float = MIN_COVER
    region_mismatch: float = REGION_MISMATCH
    min_shared: int = MIN_SHARED
    information_weight: bool = True  # a support weighs its KB finding's word weight (long, rare phrases count more)
    terms: list[_Term] = field(default_factory=list, init=False)
    edges: dict[int, list[_Edge]] = field(default_factory=dict, init=False)  # term → edges
    idf: dict[str, float] = field(default_factory=dict, init=False)
    by_word: dict[str, set[int]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        findings = {finding_key(s.finding): s.finding for s in self.kb.suggestions}
        names = {k: d.name for k, d in self.kb.diagnoses.items()}
        texts = list(dict.fromkeys([*findings.values(), *names.values()]))
        word_sets = [stems(t) for t in texts]
        documents = Counter(w for words in word_sets for w in words)
        self.idf = {w: math.log(1 + len(texts) / n) for w, n in documents.items()}
        index: dict[str, int] = {}  # name key → term ("Dural tail" and "Dural Tail" are one)
        for text, words in zip(texts, word_sets, strict=True):
            if words and finding_key(text) not in index:
                index[finding_key(text)] = len(self.terms)
                self.terms.append(_Term(text, words, sum(self.idf[w] for w in words), _shown_only_on(text)))
        specificity = self.kb.specificity()
        for s in self.kb.suggestions:
            if finding_key(s.finding) in index and not s.negative:
                self._edge(index[finding_key(s.finding)], s, specificity[finding_key(s.finding)])
        for key, name in names.items():
            if finding_key(name) in index:
                n = index[finding_key(name)]
                self.edges.setdefault(n, []).append(_Edge(n, key, 1.0, NAME_SOURCE, (), True))
        for n, term in enumerate(self.terms):
            if n in self.edges:
                for w in term.words:
                    self.by_word.setdefault(w, set()).add(n)

    def _edge(self, term: int, s: Suggestion, specificity: float) -> None:
        weight = specificity**self.specificity_power * (PATHOGNOMONIC_WEIGHT if s.pathognomonic else 1.0)
        edge = _Edge(
            term, diagnosis_key(s.diagnosis), weight, s.source, s.modalities, s.pathognomonic, systems(s.region)
        )
        self.edges.setdefault(term, []).append(edge)

    def applies(self, term: int, modality: str | None) -> bool:
        """Whether a KB finding can be seen on a study of `modality` (see `_MODALITY_ONLY`)."""
        needs = self.terms[term].modalities
        return not needs or not modality or modality not in ("CT", "MR", "XR", "US") or modality in needs

    def _region_factor(self, edge: _Edge, study: frozenset[str]) -> float:
        return 1.0 if not edge.systems or not study or edge.systems & study else self.region_mismatch

    def matches(self, text: str) -> list[tuple[int, float]]:
        """(term, cover) for each KB finding or diagnosis name that `text` covers enough, best first."""
        words = stems(text)
        candidates = set().union(*(self.by_word.get(w, set()) for w in words)) if words else set()
        out = []
        for n in candidates:
            term = self.terms[n]
            shared = term.words & words
            if max(self.idf[w] for w in shared) < MIN_WORD_WEIGHT or len(shared) < min(
                self.min_shared, len(term.words)
            ):
                continue
            cover = sum(self.idf[w] for w in shared) / term.total
            if cover >= self.min_cover:
                out.append((n, cover))
        return sorted(out, key=lambda x: -x[1])

    def rank(
        self,
        findings: Sequence[StatedFinding],
        *,
        modality: str | None = None,
        region: str | None = None,
        limit: int = 10,
    ) -> list[RankedDiagnosis]:
        """The `limit` diagnoses that best explain the stated present findings, none denied by an absent one."""
        study = systems(region)
        best: dict[str, dict[int, Support]] = defaultdict(dict)  # diagnosis → stated index → its best support
        denied: set[str] = set()
        present = [(n, f) for n, f in enumerate(findings) if f.status != "absent"]
        for n, finding in enumerate(findings):
            for term, cover in self.matches(finding.text):
                for edge in self.edges[term]:
                    if not self.applies(term, modality):
                        continue
                    if finding.status == "absent":
                        if edge.pathognomonic:
                            denied.add(edge.diagnosis)
                        continue
                    weight = cover * edge.weight * (self.terms[term].total if self.information_weight else 1.0)
                    weight *= (0.5 if finding.status == "uncertain" else 1.0) * self._region_factor(edge, study)
                    held = best[edge.diagnosis].get(n)
                    if held is None or weight > held.weight:
                        text = self.terms[term].text
                        best[edge.diagnosis][n] = Support(finding.text, text, edge.source, weight, edge.pathognomonic)
        ranked = []
        for key, supports in best.items():
            if key in denied or key not in self.kb.diagnoses:
                continue
            diagnosis = self.kb.diagnoses[key]
            ranked.append(
                RankedDiagnosis(
                    name=diagnosis.name,
                    score=sum(s.weight for s in supports.values()),
                    synonyms=diagnosis.synonyms,
                    supports=tuple(supports[n] for n in sorted(supports)),
                    unexplained=tuple(f.text for n, f in present if n not in supports),
                    concept_id=diagnosis.concept_id,
                )
            )
        ranked.sort(key=lambda d: (-d.score, d.name))
        return ranked[:limit]
