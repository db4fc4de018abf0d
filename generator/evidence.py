"""What the report writer is shown: the retrieved prior cases, the findings they vote for, and a prompt.

The LLM is small and its context short, so the evidence is distilled before it is written out: each
prior case's report goes through the finding extractor, every finding concept gets a vote per case that
states it present (and counts of cases stating it absent or uncertain), the best-voted concepts are
grounded in the ontology graph in one call, and `build_prompt` lays all of it out as compact plain text
that fits a token budget, cutting the least useful parts first and saying what it cut (the cuts become
limitations of the report).

Cases keep the statements (concept, name, status) extracted from their text, so that citing a generated
report against the same evidence does not run the extractor over the prior reports again.
`EvidenceBuilder` does all of it for one image (embed once, search, vote, ground, prompt), the same way for
training examples and for reports.

Only cases with a report are evidence: an image-only case (indexed without one) states no finding, cannot
be cited for one, has no report vector and no text to draft from. The builder searches reported cases only,
and `evidence_from_hits` leaves out any hit whose report is empty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from kgreport.generator.config import WriterConfig
from kgreport.generator.differential import CaseDiagnosis
from kgreport.json_types import JsonObject, UncheckedJson
from kgreport.knowledge.grounding import Grounding, ground_concepts
from kgreport.retrieval.report_sections import split_report
from kgreport.retrieval.search import CaseSearcher, Query

if TYPE_CHECKING:  # the extractor pulls in spaCy; the records here do not need it
    from pathlib import Path

    from kgreport.knowledge.extraction.extractor import Finding
    from kgreport.knowledge.graph.backend import GraphBackend
    from kgreport.retrieval.records import Hit

STATUSES = ("present", "uncertain", "absent")  # also the tie-break order of a majority vote
CLAIM_STATUSES = ("present", "uncertain")  # statuses that assert something a reader may act on
TOP_FINDINGS = 3  # findings (and their facts) that a prompt keeps whatever the budget
FACT_ITEMS = 3  # names per facet in a facts line
FACT_WORDS = 10  # a facts line is a hint, not the grounding: the full grounding stays in the graph
INSTRUCTION = "Write the radiology report for the new image: 'Findings:' then 'Impression:'."
EDIT_INSTRUCTION = (
    "Edit the draft into the report for the new image: keep what the evidence findings support, drop what they "
    "do not, keep negations. Write 'Findings:' then 'Impression:'."
)
NOTES_INSTRUCTION = (
    "Write the full report from the radiologist's notes: whole sentences, laterality and negations kept, nothing "
    "the notes do not say. Write 'Findings:' then 'Impression:'."
)
NO_CASES = "No similar prior cases are available."


class Extractor(Protocol):
    """What is needed of `knowledge.extraction.extractor.FindingExtractor`."""

    def extract_many(self, texts: Iterable[str], batch_size: int = 32) -> list[list[Finding]]: ...


@dataclass(frozen=True)
class Statement:
    """What one text says of one concept (several mentions folded by `case_status`)."""

    concept_id: str
    name: str
    status: str


@dataclass(frozen=True)
class CaseEvidence:
    """One retrieved prior case; `statements` are what its text says of each concept, once extracted."""

    case_id: str
    score: float
    findings: str
    impression: str = ""
    modality: str | None = None
    body_region: str | None = None
    statements: tuple[Statement, ...] | None = None

    def text(self) -> str:
        """The text findings are extracted from: findings, then impression."""
        return "\n".join(part.strip() for part in (self.findings, self.impression) if part.strip())


@dataclass(frozen=True)
class FindingEvidence:
    """One finding concept the evidence points at; `votes` = len(case_ids) = cases stating it present."""

    concept_id: str
    name: str
    status: str
    votes: int
    case_ids: tuple[str, ...]
    facts: str = ""
    uncertain_case_ids: tuple[str, ...] = ()
    absent_case_ids: tuple[str, ...] = ()

    def case_ids_by_status(self) -> dict[str, tuple[str, ...]]:
        return {"present": self.case_ids, "uncertain": self.uncertain_case_ids, "absent": self.absent_case_ids}


@dataclass(frozen=True)
class Evidence:
    cases: tuple[CaseEvidence, ...]
    findings: tuple[FindingEvidence, ...]
    modality: str | None = None
    body_region: str | None = None


# -- from search hits ---------------------------------------------------------------------------------------
def evidence_from_hits(hits: Sequence[Hit]) -> list[CaseEvidence]:
    """One CaseEvidence per case with a report, in hit order; a case found through several of its images keeps
    its first (best) hit. A hit with an empty report (an image-only case) is left out: it would count as a case
    that states nothing in every finding's votes."""
    out: dict[str, CaseEvidence] = {}
    for hit in hits:
        if hit.case_id in out or not hit.report.strip():
            continue
        sections = split_report(hit.report)
        impression = "\n".join(s for s in (sections.impression, sections.diagnosis) if s)
        out[hit.case_id] = CaseEvidence(
            case_id=hit.case_id,
            score=float(hit.score),
            findings=sections.findings,
            impression=impression,
            modality=hit.modality,
            body_region=hit.body_region,
        )
    return list(out.values())


# -- votes ----------------------------------------------------------------------------------------------------
def case_status(statuses: Iterable[str]) -> str | None:
    """What one text says of a concept it mentions several times: present > uncertain > absent
    ("No left effusion. Small right effusion." states an effusion)."""
    seen = set(statuses)
    return next((s for s in STATUSES if s in seen), None)


def with_statements(cases: Sequence[CaseEvidence], extractor: Extractor) -> list[CaseEvidence]:
    """The cases with their statements, extracting (in one call) only where they are missing."""
    todo = [i for i, c in enumerate(cases) if c.statements is None]
    found = extractor.extract_many([cases[i].text() for i in todo]) if todo else []
    out = list(cases)
    for i, findings in zip(todo, found, strict=True):
        out[i] = replace(cases[i], statements=statements_of(findings))
    return out


def statements_of(findings: Iterable[Finding]) -> tuple[Statement, ...]:
    """One statement per concept, in order of first mention."""
    by_concept: dict[str, list[Finding]] = {}
    for f in findings:
        by_concept.setdefault(f.concept_id, []).append(f)
    return tuple(
        Statement(concept_id, found[0].name, status)
        for concept_id, found in by_concept.items()
        if (status := case_status(f.status for f in found))
    )


def supported_by(claims: Iterable[Iterable[str]], min_votes: int) -> set[str]:
    """The concepts that at least `min_votes` of the texts claim (each text's claims: the concepts it states
    present or possible, counted once per text)."""
    votes: dict[str, int] = {}
    for claimed in claims:
        for concept in set(claimed):
            votes[concept] = votes.get(concept, 0) + 1
    return {c for c, n in votes.items() if n >= min_votes}


def collect_evidence(
    cases: Sequence[CaseEvidence],
    extractor: Extractor,
    graph: GraphBackend | None,
    *,
    index: str | None = None,
    modality: str | None = None,
    body_region: str | None = None,
    max_findings: int = 8,
) -> Evidence:
    """Vote the findings of `cases`, keep the `max_findings` best voted, ground them in `graph` (if given).

    A concept's status is what most of the cases mentioning it say (ties: present > uncertain > absent);
    findings are ordered by votes (cases stating them present), then name. The returned cases carry their
    extracted statements."""
    unique: dict[str, CaseEvidence] = {}
    for case in cases:
        unique.setdefault(case.case_id, case)  # a case listed twice votes once
    cases_done = with_statements(list(unique.values()), extractor)
    names: dict[str, str] = {}
    by_status: dict[str, dict[str, list[str]]] = {}
    for case in cases_done:
        for st in case.statements or ():
            names.setdefault(st.concept_id, st.name)
            by_status.setdefault(st.concept_id, {s: [] for s in STATUSES})[st.status].append(case.case_id)
    ranked = sorted(
        by_status.items(), key=lambda item: (-len(item[1]["present"]), names.get(item[0], item[0]).lower(), item[0])
    )[:max_findings]
    groundings = _ground(graph, [concept_id for concept_id, _ in ranked], index)
    findings = tuple(
        FindingEvidence(
            concept_id=concept_id,
            name=names.get(concept_id, concept_id),
            status=max(STATUSES, key=lambda s: (len(ids[s]), -STATUSES.index(s))),
            votes=len(ids["present"]),
            case_ids=tuple(ids["present"]),
            facts=facts_line(groundings[concept_id]) if concept_id in groundings else "",
            uncertain_case_ids=tuple(ids["uncertain"]),
            absent_case_ids=tuple(ids["absent"]),
        )
        for concept_id, ids in ranked
    )
    return Evidence(tuple(cases_done), findings, modality=modality, body_region=body_region)


def _ground(graph: GraphBackend | None, concept_ids: list[str], index: str | None) -> dict[str, Grounding]:
    if graph is None or not concept_ids:
        return {}
    return {g.concept_id: g for g in ground_concepts(graph, concept_ids, index=index, limit=FACT_ITEMS)}


def facts_line(grounding: Grounding, max_words: int = FACT_WORDS) -> str:
    """The grounding as one compact line, e.g. `is a: effusion, fluid disorder; located in: pleura;
    differential: empyema`, in at most `max_words` words (names dropped from the end to fit); "" for an
    unknown concept or one the graph knows nothing of."""
    if grounding.reason:
        return ""
    facets = [
        ("is a", [str(a["name"]) for a in grounding.ancestors[:FACT_ITEMS]]),
        ("located in", [str(a["name"]) for a in grounding.locations[:FACT_ITEMS]]),
        ("differential", [str(a["name"]) for a in grounding.differential_diagnoses[:FACT_ITEMS]]),
    ]
    facets = [(label, list(dict.fromkeys(items))) for label, items in facets if items]

    def render() -> str:
        return "; ".join(f"{label}: {', '.join(items)}" for label, items in facets if items)

    while facets and len(render().split()) > max_words:
        facets[-1][1].pop()
        if not facets[-1][1]:
            facets.pop()
    return render()


# -- prompt -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prompt:
    text: str
    cases_used: tuple[str, ...]
    concepts_used: tuple[str, ...]
    cut: tuple[str, ...]


@dataclass(frozen=True)
class DraftSource:
    """What the refiner edits: a retrieved case's report (`kind` "case") or the radiologist's notes ("notes")."""

    kind: str
    text: str
    case_id: str | None = None

    def heading(self) -> str:
        return f"Draft (case {self.case_id}):" if self.kind == "case" else "Radiologist's notes:"

    def instruction(self) -> str:
        return EDIT_INSTRUCTION if self.kind == "case" else NOTES_INSTRUCTION

    def as_json(self) -> JsonObject:
        return {"source": self.kind, "case_id": self.case_id, "text": self.text}

    @classmethod
    def from_json(cls, data: UncheckedJson) -> DraftSource:
        case_id = data.get("case_id")
        return cls(kind=str(data["source"]), text=str(data["text"]), case_id=None if case_id is None else str(case_id))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _case_line(case: CaseEvidence, words: int) -> str:
    meta = ", ".join([*(m for m in (case.modality, case.body_region) if m), f"{case.score:.2f}"])
    text = (case.findings.strip() or case.impression.strip()).split()
    shown = text[:words] + (["..."] if len(text) > words else [])  # "..." says there is more
    return " ".join([f"[{case.case_id}]", f"({meta})", *shown])


def _finding_line(finding: FindingEvidence, total_cases: int, with_facts: bool) -> str:
    """`- edema: present 2/3, absent 1/3; is a: fluid disorder` (no ids: they cost tokens and the
    report's citations are attached afterwards from the same evidence)."""
    counts = [f"{status} {len(ids)}/{total_cases}" for status, ids in finding.case_ids_by_status().items() if ids]
    line = f"- {finding.name}: {', '.join(counts) or 'from other sources'}"
    return f"{line}; {finding.facts}" if with_facts and finding.facts else line


def _render(
    evidence: Evidence,
    cases: list[CaseEvidence],
    case_words: dict[str, int],
    findings: list[FindingEvidence],
    facts: list[bool],
    draft: DraftSource | None = None,
) -> str:
    lines = []
    if predicted := ", ".join(m for m in (evidence.modality, evidence.body_region) if m):
        lines.append(f"New image (predicted): {predicted}")
    if cases:
        lines.append("Similar prior cases:")
        lines += [_case_line(c, case_words[c.case_id]) for c in cases]
    else:
        lines.append(NO_CASES)
    if findings:
        lines.append("Evidence findings:")
        lines += [_finding_line(f, len(evidence.cases), show) for f, show in zip(findings, facts, strict=True)]
    if draft is not None:  # last before the instruction: the text the answer mostly copies
        lines += [draft.heading(), draft.text.strip(), draft.instruction()]
    else:
        lines.append(INSTRUCTION)
    return "\n".join(lines)


def build_prompt(
    evidence: Evidence,
    count_tokens: Callable[[str], int],
    budget: int,
    *,
    case_words: int = 32,
    draft: DraftSource | None = None,
) -> Prompt:
    """The evidence block and the instruction (and the `draft` to edit, when given), in at most `budget`
    tokens (the whole text, instruction and draft included) where possible.

    Too long a text is cut, least useful first, until it fits: the facts of findings beyond the top 3 (from
    the last), cases beyond the first (from the last), findings beyond the top 3 (from the last), then the
    words of the remaining case's text. The instruction, the top case's line and the top 3 findings always
    stay: when even they do not fit, the prompt is that minimum and `cut` says it is over budget."""
    cases = list(evidence.cases)
    findings = list(evidence.findings)
    facts = [True] * len(findings)
    words = {c.case_id: case_words for c in cases}
    cut: list[str] = []

    def text() -> str:
        return _render(evidence, cases, words, findings, facts, draft)

    def fits() -> bool:
        return count_tokens(text()) <= budget

    dropped_facts = 0
    for i in reversed(range(TOP_FINDINGS, len(findings))):
        if fits():
            break
        if findings[i].facts:
            facts[i] = False
            dropped_facts += 1
    if dropped_facts:
        cut.append(f"graph facts of {_count(dropped_facts, 'finding')} dropped")

    dropped_cases = []
    while len(cases) > 1 and not fits():
        dropped_cases.append(cases.pop().case_id)
    if dropped_cases:
        cut.append(f"{_count(len(dropped_cases), 'case')} dropped ({', '.join(reversed(dropped_cases))})")

    dropped_findings = []
    while len(findings) > TOP_FINDINGS and not fits():
        dropped_findings.append(findings.pop().name)
        facts.pop()
    if dropped_findings:
        cut.append(f"{_count(len(dropped_findings), 'finding')} dropped ({', '.join(reversed(dropped_findings))})")

    if cases and not fits():
        top = cases[0]
        shown = min(case_words, len((top.findings.strip() or top.impression.strip()).split()))
        lo, hi = 0, shown - 1  # the most words (below `shown`) that fit, by bisection
        words[top.case_id] = 0
        while lo <= hi:
            mid = (lo + hi) // 2
            words[top.case_id] = mid
            if fits():
                lo = mid + 1
            else:
                hi = mid - 1
        words[top.case_id] = max(hi, 0)
        cut.append(f"case {top.case_id} findings shortened to {words[top.case_id]} words")

    if not fits():
        cut.append(f"evidence over budget even at its minimum ({count_tokens(text())} > {budget} tokens)")
    return Prompt(
        text=text(),
        cases_used=tuple(c.case_id for c in cases),
        concepts_used=tuple(f.concept_id for f in findings),
        cut=tuple(cut),
    )


# -- one image's evidence, for training and inference alike ------------------------------------------------
@dataclass(frozen=True)
class ImageEvidence:
    """Everything the writer knows of one image before it writes: its vector, the retrieved cases (hits, their
    report vectors with a mask, and their voted and grounded findings) and the predicted modality and region."""

    vector: np.ndarray  # (image_dim,)
    texts: np.ndarray  # (max(k, 1), text_dim): the retrieved reports' vectors, zero rows past the last hit
    mask: np.ndarray  # (max(k, 1),) True where a retrieved case fills the row
    hits: tuple[Hit, ...]  # retrieved cases with a report (the draft candidates), best first
    evidence: Evidence
    embedded: Any = None  # `CaseSearcher.embed_image`'s answer, kept so later searches need not decode again


@dataclass
class EvidenceBuilder:
    """Searches, collects evidence and builds the prompt for one image: shared by training and inference."""

    searcher: CaseSearcher
    extractor: Extractor
    graph: GraphBackend | None
    index: str | None
    count_tokens: Callable[[str], int]
    k: int = WriterConfig.k  # the writer's config passes its own (`usecases.reporting.evidence_builder`)
    prompt_budget: int = WriterConfig.prompt_budget
    case_words: int = WriterConfig.case_words

    def for_image(self, path: Path, *, text: str | None = None) -> ImageEvidence:
        """The evidence for the image at `path`; `text` (the radiologist's notes) joins the search, so the
        cases are found by image and text together. `k` = 0 retrieves nothing (the no-retrieval ablation:
        the image alone, like an empty index). Image-only cases are not searched: the k cases all have a
        report to draft from, cite and fuse."""
        embedded = self.searcher.embed_image(path)
        hits: list[Hit] = []
        modality = body_region = None
        if self.k > 0:
            query = Query(image=path, text=text or None)
            result = self.searcher.search(query, k=self.k, embedded=embedded, reported_only=True)
            hits = list(result.hits)
            modality, body_region = result.predicted.modality, result.predicted.body_region
        evidence = collect_evidence(
            evidence_from_hits(hits),
            self.extractor,
            self.graph,
            index=self.index,
            modality=modality,
            body_region=body_region,
        )
        texts = np.zeros((max(self.k, 1), self.searcher.text_dim), dtype=np.float32)
        mask = np.zeros(max(self.k, 1), dtype=bool)
        if hits:
            texts[: len(hits)] = self.searcher.case_text_vectors([h.case_id for h in hits])
            mask[: len(hits)] = True
        return ImageEvidence(embedded[0], texts, mask, tuple(hits), evidence, embedded)

    def similar_diagnoses(
        self, found: ImageEvidence, path: Path, *, text: str | None = None, k: int = 10
    ) -> list[CaseDiagnosis]:
        """The diagnoses of the `k` reported cases most similar to the image (or, with `text`, to that text
        alone), with their scores: the differential's retrieval votes."""
        query = Query(text=text) if text else Query(image=path)
        embedded = None if text else found.embedded
        result = self.searcher.search(query, k=k, embedded=embedded, reported_only=True)
        return [CaseDiagnosis(h.case_id, h.score, split_report(h.report).diagnosis) for h in result.hits]

    def image_text_scores(self, found: ImageEvidence) -> list[float]:
        """How well each retrieved case's caption describes the query image: the CT encoder's CLIP text tower
        against the image vector (cosine), one per hit (0 for a hit with no caption)."""
        scores = []
        for hit in found.hits:
            text = (hit.caption or "").strip()
            scores.append(float(self.searcher.embed_clip_text(text) @ found.vector) if text else 0.0)
        return scores

    def prompt(self, evidence: Evidence, draft: DraftSource | None = None) -> Prompt:
        """The prompt for `evidence` (with the `draft` to edit) within this builder's token budget."""
        return build_prompt(evidence, self.count_tokens, self.prompt_budget, case_words=self.case_words, draft=draft)
