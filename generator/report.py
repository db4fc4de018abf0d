"""The LLM's text as a structured report: sections, sentences, findings with status, citations, a post-check.

A small LLM writes free text, often with chat babble around it, so parsing is tolerant: headings in any
case or markdown, a missing impression, text after the impression (cut at the next heading or the chat
template's end marker). Every findings sentence then goes through the same finding extractor the prior
reports went through, and is tied to the evidence: the prior cases that mention its concepts are its
citations, and a finding it states present (or possible) that neither a prior case nor another source
(the image classifier, graph neighbours of the evidence) backs is flagged unsupported, for the reading
radiologist to check first. A negation ("No pleural effusion.") claims nothing and is always supported.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from kgreport.generator.differential import DifferentialItem
from kgreport.generator.evidence import CLAIM_STATUSES as CLAIMS
from kgreport.generator.evidence import (
    DraftSource,
    Evidence,
    Extractor,
    Prompt,
    case_status,
    statements_of,
    supported_by,
)
from kgreport.json_types import JsonObject, UncheckedJson
from kgreport.retrieval.report_sections import SECTION_HEADINGS

NO_CASES_LIMITATION = "no similar prior cases: written from the image and the graph alone"


class ReportParseError(ValueError):
    """The model's text holds no findings."""


@dataclass(frozen=True)
class ReportSentence:
    sentence: str
    status: str  # present | absent | uncertain | none (no finding stated)
    concept_ids: tuple[str, ...]
    cited_case_ids: tuple[str, ...]
    supported: bool
    unsupported_concept_ids: tuple[str, ...] = ()
    notes_item: int | None = None  # notes mode: the notes item (1-based) this sentence writes out

    def as_json(self) -> JsonObject:
        return {
            "sentence": self.sentence,
            "status": self.status,
            "concept_ids": list(self.concept_ids),
            "cited_case_ids": list(self.cited_case_ids),
            "supported": self.supported,
            "unsupported_concept_ids": list(self.unsupported_concept_ids),
            "notes_item": self.notes_item,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReportSentence:
        return cls(
            sentence=str(data["sentence"]),
            status=str(data["status"]),
            concept_ids=tuple(data.get("concept_ids", ())),
            cited_case_ids=tuple(data.get("cited_case_ids", ())),
            supported=bool(data["supported"]),
            unsupported_concept_ids=tuple(data.get("unsupported_concept_ids", ())),
            notes_item=None if data.get("notes_item") is None else int(data["notes_item"]),
        )


@dataclass(frozen=True)
class DraftCandidate:
    """A retrieved report the writer considered as its draft: its score, how far the other candidates
    agree with it, and whether it was the one chosen."""

    case_id: str
    score: float
    agreement: float
    selected: bool
    text: str

    def as_json(self) -> JsonObject:
        return {
            "case_id": self.case_id,
            "score": round(self.score, 6),
            "agreement": round(self.agreement, 4),
            "selected": self.selected,
            "text": self.text,
        }

    @classmethod
    def from_json(cls, data: UncheckedJson) -> DraftCandidate:
        return cls(
            case_id=str(data["case_id"]),
            score=float(data["score"]),
            agreement=float(data["agreement"]),
            selected=bool(data["selected"]),
            text=str(data["text"]),
        )


@dataclass
class Report:
    findings: list[ReportSentence]
    impression: str
    gate: float | None
    evidence: JsonObject  # {"cases": [{case_id, score, modality, body_region}], "concepts": [...]}
    model: JsonObject = field(default_factory=dict)  # filled by the caller: names, versions
    limitations: list[str] = field(default_factory=list)
    mode: str = "image"  # "image": a retrieved draft refined; "notes": the radiologist's notes written out
    abstained: bool = False  # no confident draft: the report lists the similar cases instead
    confidence: float | None = None  # calibrated confidence in the image-only draft
    draft: DraftSource | None = None  # what was edited: a retrieved case's report, or the notes
    candidates: list[DraftCandidate] = field(default_factory=list)  # the retrieved drafts considered
    differential: list[DifferentialItem] = field(default_factory=list)  # ranked, each with its case and concept ids
    removed: list[str] = field(default_factory=list)  # sentences taken out, each with why in brackets
    impression_items: list[int] = field(default_factory=list)  # notes mode: the items (1-based) it sums up
    # The weight each differential source got on this case (image, text, knowledge): the dynamic fusion.
    differential_weights: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> JsonObject:
        return {
            "mode": self.mode,
            "abstained": self.abstained,
            "confidence": self.confidence,
            "findings": [s.as_json() for s in self.findings],
            "impression": self.impression,
            "differential": [d.as_json() for d in self.differential],
            "differential_weights": dict(self.differential_weights),
            "gate": self.gate,
            "draft": None if self.draft is None else self.draft.as_json(),
            "candidates": [c.as_json() for c in self.candidates],
            "removed": list(self.removed),
            "impression_items": list(self.impression_items),
            "evidence": copy.deepcopy(self.evidence),
            "model": copy.deepcopy(self.model),
            "limitations": list(self.limitations),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Report:
        gate, confidence = data.get("gate"), data.get("confidence")
        return cls(
            findings=[ReportSentence.from_json(s) for s in data.get("findings", [])],
            impression=str(data.get("impression", "")),
            gate=None if gate is None else float(gate),
            evidence=copy.deepcopy(dict(data.get("evidence", {}))),
            model=copy.deepcopy(dict(data.get("model", {}))),
            limitations=[str(x) for x in data.get("limitations", [])],
            mode=str(data.get("mode", "image")),
            abstained=bool(data.get("abstained", False)),
            confidence=None if confidence is None else float(confidence),
            draft=None if data.get("draft") is None else DraftSource.from_json(data["draft"]),
            candidates=[DraftCandidate.from_json(c) for c in data.get("candidates", [])],
            differential=[DifferentialItem.from_json(d) for d in data.get("differential", [])],
            removed=[str(x) for x in data.get("removed", [])],
            impression_items=[int(x) for x in data.get("impression_items", [])],
            differential_weights={str(k): float(v) for k, v in data.get("differential_weights", {}).items()},
        )

    def as_text(self) -> str:
        findings = " ".join(s.sentence for s in self.findings)
        text = f"Findings:\n{findings}\n\nImpression:\n{self.impression}"
        if self.differential:
            items = "; ".join(f"{n}. {d.name}" for n, d in enumerate(self.differential, 1))
            text += f"\nDifferential: {items}"
        return text


# -- sections ----------------------------------------------------------------------------------------------
_FINDINGS = ("findings", "finding")
_IMPRESSION = ("impression", "impressions", "conclusion", "conclusions", "summary", "opinion")
_IMPRESSION_FALLBACK = ("diagnosis", "final diagnosis")  # taken as the impression only when there is none
# Headings that end a section: what a model trained on archive reports, or echoing its prompt, goes on with.
_OTHER = (
    *SECTION_HEADINGS["history"],
    "technique",
    "comparison",
    "note",
    "notes",
    "differential",
    "differential diagnosis",
    "differential diagnoses",
    "recommendation",
    "recommendations",
    "explanation",
    "reference",
    "references",
    "disclaimer",
    "caption",
    "user",
    "assistant",
    "system",
    "question",
    "answer",
    "new image",
    "new image (predicted)",
    "similar prior cases",
    "evidence findings",
)
_ALL_NAMES = (*_FINDINGS, *_IMPRESSION, *_IMPRESSION_FALLBACK, *_OTHER)
_NAMES = "|".join(sorted((re.escape(n) for n in _ALL_NAMES), key=len, reverse=True))  # longest first
# At a line start ("FINDINGS:", "## Findings", "**Impression:**", a bare "Findings" line), or after a
# sentence's end on the same line ("... effusion. Impression: ...", where the colon is then required).
_HEADING = re.compile(
    rf"^[ \t]*(?:#{{1,6}}[ \t]*)?[*_]*(?P<line>{_NAMES})[*_]*[ \t]*(?::[*_]*|[ \t]*$)"
    rf"|(?<=[.!?])[ \t]+[*_]*(?P<inline>{_NAMES})[*_]*[ \t]*:[*_]*",
    re.IGNORECASE | re.MULTILINE,
)
_END_MARKER = re.compile(r"<\|(?:im_end|im_start|endoftext|eot_id|end)\|>|</s>")


_REMOVAL = re.compile(r"^(?P<sentence>.*?)\s*\[(?P<why>[^\[\]]+)\]$", re.DOTALL)


def removal(sentence: str, why: str) -> str:
    """An entry of `Report.removed`: the sentence taken out (or changed), then why, in brackets."""
    return f"{sentence} [{why}]"


def split_removal(entry: str) -> tuple[str, str]:
    """(sentence, why) of a `Report.removed` entry; an entry without a reason was removed as unsupported."""
    match = _REMOVAL.match(entry)
    return (match.group("sentence"), match.group("why")) if match else (entry, "unsupported")


def split_sections(text: str) -> tuple[str, str]:
    """(findings, impression) of the model's text; text before the first heading is the findings when
    there is no findings heading. Raises ReportParseError when there is no findings text."""
    text = (text or "").replace("\r\n", "\n")
    if end := _END_MARKER.search(text):
        text = text[: end.start()]
    matches = list(_HEADING.finditer(text))
    parts: list[tuple[str | None, str]] = [(None, text[: matches[0].start()] if matches else text)]
    for i, match in enumerate(matches):
        end_at = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        name = re.sub(r"\s+", " ", (match.group("line") or match.group("inline")).lower())
        parts.append((name, text[match.end() : end_at]))

    def first(names: tuple[str | None, ...]) -> str | None:
        return next((body.strip() for name, body in parts if name in names), None)

    findings = first(_FINDINGS)
    findings = first((None,)) if findings is None else findings
    impression = first(_IMPRESSION)
    impression = first(_IMPRESSION_FALLBACK) if impression is None else impression
    if not findings:
        raise ReportParseError(f"no findings text in the model's output: {text.strip()[:200]!r}")
    return findings, impression or ""


# -- sentences ---------------------------------------------------------------------------------------------
_BULLET = re.compile(r"^\s*(?:[-*•‣◦]|\(?\d{1,2}[.)])\s+")
_BULLET_ONLY = re.compile(r"^\s*\(?\d{1,2}[.)]\s*$")
_BOUNDARY = re.compile(r"[.!?]+[\"')\]]*\s+")
_ABBREVIATIONS = {
    "dr",
    "drs",
    "mr",
    "mrs",
    "ms",
    "prof",
    "st",
    "vs",
    "eg",
    "ie",
    "cf",
    "approx",
    "appr",
    "fig",
    "figs",
    "incl",
    "resp",
}
_DOTTED = re.compile(r"^(?:[a-z]\.)+[a-z]$")  # e.g, i.e, u.s (the final dot is the boundary's)


def split_sentences(text: str) -> list[str]:
    """Sentences of a findings text, list bullets ("-", "1.", "2)") removed.

    A sentence ends at ".", "!" or "?" followed by white space, except after an abbreviation ("Dr.",
    "e.g.", "vs.") or a list number; "2.5 cm" has no space after its dot. A line break ends a sentence
    too, unless the next line goes on in lower case (a wrapped line)."""
    lines: list[str] = []
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line:
            continue
        wrapped = lines and line[0].islower() and not _BULLET.match(line) and lines[-1][-1] not in ".!?:"
        if wrapped:
            lines[-1] += " " + line
        else:
            lines.append(line)
    pieces: list[str] = []
    for line in lines:
        start = 0
        for match in _BOUNDARY.finditer(line):
            head = line[start : match.start()]
            if match.group().startswith(".") and _abbreviation(head):
                continue
            if _BULLET_ONLY.match(line[start : match.end()]):
                continue  # "2. " opens an inline list item, it ends nothing
            pieces.append(line[start : match.end()])
            start = match.end()
        pieces.append(line[start:])
    return [s for s in (_BULLET.sub("", p, count=1).strip() for p in pieces) if s]


def _abbreviation(head: str) -> bool:
    words = head.split()
    if not words:
        return False
    word = words[-1].lstrip("([\"'").lower()
    return word in _ABBREVIATIONS or bool(_DOTTED.match(word))


# -- citations and the post-check --------------------------------------------------------------------------
def cite(
    findings_text: str,
    evidence: Evidence,
    extractor: Extractor,
    *,
    supported_concepts: Collection[str] = (),
    min_votes: int = 1,
) -> list[ReportSentence]:
    """Each sentence of `findings_text` with its findings, the evidence cases that mention them (any status,
    in evidence order) and whether its present or uncertain findings are backed by at least `min_votes`
    cases stating them present or uncertain, or by `supported_concepts`. One extractor call covers the
    sentences and any case whose statements were not extracted yet."""
    sentences = split_sentences(findings_text)
    todo = [c for c in evidence.cases if c.statements is None]
    found = extractor.extract_many(sentences + [c.text() for c in todo]) if sentences or todo else []
    extracted = {c.case_id: statements_of(f) for c, f in zip(todo, found[len(sentences) :], strict=True)}
    mentions: list[tuple[str, set[str]]] = []
    claims: list[set[str]] = []
    for case in evidence.cases:
        statements = case.statements if case.statements is not None else extracted[case.case_id]
        mentions.append((case.case_id, {s.concept_id for s in statements}))
        claims.append({s.concept_id for s in statements if s.status in CLAIMS})
    support = set(supported_concepts) | supported_by(claims, min_votes)

    out = []
    for sentence, findings in zip(sentences, found[: len(sentences)], strict=True):
        concept_ids = tuple(dict.fromkeys(f.concept_id for f in findings))
        claimed = dict.fromkeys(f.concept_id for f in findings if f.status in CLAIMS)
        unsupported = tuple(c for c in claimed if c not in support)
        mentioned = set(concept_ids)
        out.append(
            ReportSentence(
                sentence=sentence,
                status=case_status(f.status for f in findings) or "none",
                concept_ids=concept_ids,
                cited_case_ids=tuple(case_id for case_id, ids in mentions if ids & mentioned),
                supported=not unsupported,
                unsupported_concept_ids=unsupported,
            )
        )
    return out


def evidence_summary(evidence: Evidence) -> JsonObject:
    """The evidence as the report carries it (JSON-ready)."""
    return {
        "cases": [
            {
                "case_id": c.case_id,
                "score": round(float(c.score), 6),
                "modality": c.modality,
                "body_region": c.body_region,
            }
            for c in evidence.cases
        ],
        "concepts": [
            {"concept_id": f.concept_id, "name": f.name, "status": f.status, "votes": f.votes}
            for f in evidence.findings
        ],
    }


def build_report(
    text: str,
    evidence: Evidence,
    extractor: Extractor,
    *,
    gate: float | None,
    prompt: Prompt | None,
    supported_concepts: Collection[str] = (),
    min_votes: int = 1,
    model: Mapping[str, Any] | None = None,
) -> Report:
    """The structured report of the model's `text` (raises ReportParseError when it has no findings)."""
    findings_text, impression = split_sections(text)
    sentences = cite(findings_text, evidence, extractor, supported_concepts=supported_concepts, min_votes=min_votes)
    limitations = [] if evidence.cases else [NO_CASES_LIMITATION]
    limitations += [f"prompt shortened: {note}" for note in (prompt.cut if prompt else ())]
    if unsupported := [s for s in sentences if not s.supported]:
        ids = ", ".join(dict.fromkeys(c for s in unsupported for c in s.unsupported_concept_ids))
        limitations.append(f"findings stated that no prior case or other source supports: {ids}")
    return Report(
        findings=sentences,
        impression=impression,
        gate=None if gate is None else float(gate),
        evidence=evidence_summary(evidence),
        model=dict(model or {}),
        limitations=limitations,
    )
