"""Which draft the refiner edits when only an image is given, and how sure the system is of it.

The candidates are the retrieved cases' reports, in the writer's format. `choose_draft` takes the nearest
(`top1`), the one the others agree with most (`consensus`, `generator.draft.select_draft`), or the one whose
caption the CT encoder's CLIP text tower finds closest to the image (`image_text`); the choice is made on dev
(`benchmarks.report_quality`) and stored in the writer config. The features returned with it are
what the calibrated confidence (`generator.confidence`) reads: a draft the neighbours echo, from close
neighbours, whose findings several of them state, is more often right.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kgreport.generator.config import WriterConfig
from kgreport.generator.draft import Candidate, Selection, draft_text, select_draft
from kgreport.generator.evidence import CLAIM_STATUSES, DraftSource, Evidence, ImageEvidence, supported_by
from kgreport.retrieval.report_sections import split_report

FEATURES = ("top_score", "agreement", "supported_share", "score_gap", "image_text")


@dataclass(frozen=True)
class DraftChoice:
    candidates: tuple[Candidate, ...]
    selection: Selection
    source: DraftSource
    features: dict[str, float]

    @property
    def chosen(self) -> Candidate:
        return self.candidates[self.selection.index]


def candidates_of(found: ImageEvidence, config: WriterConfig) -> list[Candidate]:
    """One candidate per retrieved case, in rank order: its image caption and findings, then impression."""
    present = claimed_by_case(found.evidence)
    out = []
    for hit in found.hits:
        sections = split_report(hit.report)
        findings = " ".join(x.strip() for x in (hit.caption, sections.findings) if x and x.strip())
        impression = (sections.impression or sections.diagnosis).strip()
        text = draft_text(
            findings, impression, findings_words=config.findings_words, impression_words=config.impression_words
        )
        out.append(Candidate(hit.case_id, float(hit.score), text, present.get(hit.case_id, frozenset())))
    return out


def claimed_by_case(evidence: Evidence) -> dict[str, frozenset[str]]:
    """{case id: the concepts its text states present or possible}."""
    return {
        c.case_id: frozenset(s.concept_id for s in c.statements or () if s.status in CLAIM_STATUSES)
        for c in evidence.cases
    }


def supported_concepts(evidence: Evidence, min_votes: int) -> set[str]:
    """Concepts that at least `min_votes` of the retrieved cases state present or possible."""
    return supported_by(claimed_by_case(evidence).values(), min_votes)


def share_supported(claimed: Iterable[str], supported: set[str]) -> float:
    """Share of `claimed` concepts in `supported` (1 when nothing is claimed: nothing to doubt)."""
    claimed = set(claimed)
    return len(claimed & supported) / len(claimed) if claimed else 1.0


def choose_draft(found: ImageEvidence, config: WriterConfig, image_text: Sequence[float] | None = None) -> DraftChoice:
    """The draft to edit among the retrieved reports; `found` must have at least one hit. `image_text` holds
    each hit's image-text score (`EvidenceBuilder.image_text_scores`); without it that score reads 0."""
    candidates = candidates_of(found, config)
    if not candidates:
        raise ValueError("no retrieved case to draft from")
    image_text = list(image_text) if image_text is not None else [0.0] * len(candidates)
    consensus = select_draft(candidates, lexical_weight=config.lexical_weight)
    index = {
        "top1": 0,
        "image_text": max(range(len(candidates)), key=lambda i: (image_text[i], -i)),
        "consensus": consensus.index,
    }[config.draft_selection]
    selection = Selection(index, consensus.agreements)
    chosen = candidates[index]
    scores = [c.score for c in candidates]
    features = {
        "top_score": scores[0],
        "agreement": selection.agreement if len(candidates) > 1 else 0.0,
        "supported_share": share_supported(chosen.present, supported_concepts(found.evidence, config.min_votes)),
        "score_gap": scores[0] - (sum(scores[1:]) / (len(scores) - 1) if len(scores) > 1 else 0.0),
        "image_text": image_text[index],
    }
    return DraftChoice(tuple(candidates), selection, DraftSource("case", chosen.text, chosen.case_id), features)
