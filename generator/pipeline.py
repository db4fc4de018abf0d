"""Image (and the radiologist's notes) → grounded report: retrieve, choose a draft, refine, check, cite.

Two modes, one refiner:

- image only: the draft is a retrieved case's report (`generator.refine.choose_draft`); below the calibrated
  confidence threshold the report abstains and lists the similar cases instead of inventing one;
- notes: the draft is the radiologist's notes, shorthand expanded (`generator.notes`); the cases are found by
  the image and the notes together.

The LLM edits the draft against the voted, grounded findings; draft-lookup speculative decoding proposes the
draft's own tokens, so copying costs a fraction of the forwards. Every sentence is then checked against the
evidence: a finding stated present that the evidence does not support (in image mode, fewer than
`min_votes` of the retrieved cases state it; in notes mode, neither the notes nor a case) is removed when
`drop_unsupported` is on, and listed in `removed`. The report ends with a ranked differential blended from
the image's similar cases, the notes' own similar cases and the knowledge base's ranking of the stated findings,
with the weight each source got on this case (`generator.differential`, `generator.source_weights`).

Output the model writes that does not parse into Findings / Impression is written again with the answer
forced to start with "Findings:" (and "Impression:" after the findings when still missing); if that fails
too, the draft itself goes through the post-check and the report says the refiner's text was not used.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from kgreport.errors import UpstreamFailed
from kgreport.generator.confidence import Calibration
from kgreport.generator.config import WriterConfig
from kgreport.generator.decoding import DecodeResult, DecodingConfig
from kgreport.generator.differential import (
    DifferentialItem,
    case_votes,
    diagnosis_name,
    fuse,
    knowledge_votes,
    short_diagnosis,
)
from kgreport.generator.evidence import CLAIM_STATUSES, DraftSource, EvidenceBuilder, ImageEvidence, Prompt
from kgreport.generator.image_draft import clean_sentence, similar_cases_impression
from kgreport.generator.model import Batch, ReportGenerator
from kgreport.generator.notes import Notes, prepare_notes
from kgreport.generator.notes_findings import contradicts_negatives, stated_findings, write_findings
from kgreport.generator.notes_findings import impression as notes_impression
from kgreport.generator.refine import DraftChoice, choose_draft
from kgreport.generator.report import (
    NO_CASES_LIMITATION,
    DraftCandidate,
    Report,
    ReportParseError,
    ReportSentence,
    build_report,
    cite,
    evidence_summary,
    removal,
    split_sections,
    split_sentences,
)
from kgreport.generator.source_weights import SourceWeights, Weigher
from kgreport.json_types import JsonObject
from kgreport.knowledge.extraction.notes_items import NotesItem, split_items
from kgreport.knowledge.ontology.diagnosis_ranking import DiagnosisRanker, StatedFinding
from kgreport.retrieval.report_sections import split_report

NOTES_TOKENS_PER_TOKEN = 2  # notes mode: the findings restate the notes, in about this many tokens per notes token
NOTES_EXTRA_TOKENS = 24  # notes mode: headings and a short impression
ABSTAIN_TEXT = "No confident draft: the similar cases below disagree or are not close enough. Read the image."


def _agreed_findings(found: ImageEvidence, min_votes: int) -> list[StatedFinding]:
    """Image only: the findings at least `min_votes` similar cases state, as the knowledge base ranks them."""
    return [StatedFinding(f.name, f.status) for f in found.evidence.findings if f.votes >= max(min_votes, 1)]


class ReportGenerationError(UpstreamFailed, RuntimeError):
    """Neither the refiner's text (constrained retry included) nor the draft itself parses into a report."""

    code = "report_generation_failed"


@dataclass
class ReportWriter:
    generator: ReportGenerator
    evidence: EvidenceBuilder
    config: WriterConfig = field(default_factory=WriterConfig)
    calibration: Calibration | None = None
    fixed_gate: float | None = None  # ablation: pin the fusion gate
    model_info: JsonObject = field(default_factory=dict)
    source_weights: Weigher = field(default_factory=SourceWeights)  # the differential's per-case source weights
    diagnoses: DiagnosisRanker | None = None  # the finding → diagnosis knowledge base; None: retrieval votes only
    # Seconds the last `write` spent per stage (evidence, generate, post-check), and its decoding statistics.
    stages: dict[str, float] = field(default_factory=dict)

    def write(self, image: Path, notes: str | None = None, *, max_new_tokens: int | None = None) -> Report:
        """The report for `image`; with `notes` (the radiologist's findings, shorthand allowed) in notes mode.

        Raises `generator.notes.NotesError` for empty notes; notes over the limit are cut, and the report says so."""
        prepared = prepare_notes(notes, self.config.max_notes_chars) if notes is not None else None
        started = time.perf_counter()
        found = self.evidence.for_image(image, text=prepared.expanded if prepared else None)
        self.stages = {"evidence": time.perf_counter() - started, "generate": 0.0, "post_check": 0.0}
        budget = max_new_tokens or self.config.max_new_tokens  # the writer's config unless the caller says
        if prepared is not None:
            report = self._from_notes(image, found, prepared, budget)
        else:
            report = self._from_image(image, found, budget)
        report.model["max_new_tokens"] = budget  # what bounded the decoding, said in every front end alike
        return report

    # -- image only -----------------------------------------------------------------------------------------
    def _from_image(self, image: Path, found: ImageEvidence, budget: int) -> Report:
        if not found.hits:
            return self._abstain(image, found, None, None, [NO_CASES_LIMITATION])
        choice = choose_draft(found, self.config, self.evidence.image_text_scores(found))
        confidence = self.calibration.probability(choice.features) if self.calibration else None
        candidates = _candidates(choice)
        if confidence is not None and self.config.abstain_below is not None and confidence < self.config.abstain_below:
            note = f"confidence {confidence:.2f} under the threshold {self.config.abstain_below:.2f}"
            return self._abstain(image, found, confidence, candidates, [f"no confident draft: {note}"])
        prompt = self.evidence.prompt(found.evidence, choice.source)
        report = self._write(image, found, prompt, choice.source, budget, min_votes=self.config.min_votes)
        self._own_details_only(report, found)
        if not report.findings:  # the post-check took every sentence out: nothing left worth a draft
            why = f"no supported finding: the post-check removed {len(report.removed)} of the draft's sentences"
            abstention = self._abstain(image, found, confidence, candidates, [why])
            abstention.removed, abstention.draft = report.removed, report.draft
            return abstention
        report.confidence, report.candidates = confidence, candidates
        self._add_differential(report, image, found, _agreed_findings(found, self.config.min_votes))
        return report

    @staticmethod
    def _own_details_only(report: Report, found: ImageEvidence) -> None:
        """Image only: no measurement, date, age, sex or side of the similar case's patient, no cut sentence,
        and an Impression that names the similar cases rather than stating their diagnosis
        (`generator.image_draft`)."""
        kept: list[ReportSentence] = []
        for s in report.findings:
            cleaned = clean_sentence(s.sentence)
            if cleaned.sentence is None:
                report.removed.append(removal(s.sentence, cleaned.reason or "removed"))
            elif any(k.sentence.lower() == cleaned.sentence.lower() for k in kept):
                report.removed.append(removal(s.sentence, "repeats a sentence"))
            else:
                kept.append(replace(s, sentence=cleaned.sentence))
                if cleaned.reason:
                    report.removed.append(removal(s.sentence, cleaned.reason))
        report.findings = kept
        cases = [(h.case_id, short_diagnosis(diagnosis_name(split_report(h.report).diagnosis))) for h in found.hits]
        report.impression = similar_cases_impression(list(dict.fromkeys(cases)))

    def _abstain(
        self,
        image: Path,
        found: ImageEvidence,
        confidence: float | None,
        candidates: list[DraftCandidate] | None,
        why: list[str],
    ) -> Report:
        report = Report(
            findings=[],
            impression=ABSTAIN_TEXT,
            gate=None,
            evidence=evidence_summary(found.evidence),
            model=dict(self.model_info),
            limitations=why,
            abstained=True,
            confidence=confidence,
            candidates=candidates or [],
        )
        self._add_differential(report, image, found, _agreed_findings(found, self.config.min_votes))
        return report

    # -- notes ------------------------------------------------------------------------------------------------
    def _from_notes(self, image: Path, found: ImageEvidence, notes: Notes, budget: int) -> Report:
        modality = found.evidence.modality
        items = split_items(notes.raw, modality)
        stated = self.evidence.extractor.extract_many([notes.expanded])[0]
        claimed = list(dict.fromkeys(f.concept_id for f in stated if f.status in CLAIM_STATUSES))
        # The notes take the first text slot: the gate then weighs the image against the notes and the cases.
        notes_vector = self.evidence.searcher.embed_report_text(notes.expanded)
        found = replace(
            found,
            texts=np.vstack([notes_vector[None], found.texts[:-1]]).astype(np.float32),
            mask=np.concatenate([[True], found.mask[:-1]]),
        )
        draft = DraftSource("notes", notes.expanded)
        prompt = self.evidence.prompt(found.evidence, draft)
        batch = self._batch(found, prompt)
        refined: list[str] = []
        gate: float | None = None
        written_by = "notes expanded"
        used_llm = self.config.notes_with_llm and self.config.refine_with_llm
        if used_llm:
            # The findings restate the notes: a budget in proportion to them (plus the impression) stops rambling.
            notes_tokens = self.generator.count_tokens(notes.expanded)
            budget = min(budget, NOTES_TOKENS_PER_TOKEN * notes_tokens + NOTES_EXTRA_TOKENS)
            for text, text_gate, how in self._refined_texts(batch, draft.text, budget):
                try:
                    refined = split_sentences(split_sections(text)[0])
                except ReportParseError:
                    continue
                gate, written_by = text_gate, how
                break
        if gate is None:
            gate = self._gate(batch)
        started = time.perf_counter()
        header = " ".join(x for x in (modality, found.evidence.body_region) if x)
        written, removals = write_findings(items, refined, header=header, modality=modality)
        sentences = [(w.item.index + 1, s) for w in written for s in w.sentences]
        cited = [cite(s, found.evidence, self.evidence.extractor, supported_concepts=claimed) for _, s in sentences]
        # Each sentence was checked against its notes item: the notes support it, whatever the cases say.
        findings = [
            replace(c[0], sentence=text, supported=True, unsupported_concept_ids=(), notes_item=number)
            if c
            else ReportSentence(text, "none", (), (), True, (), number)
            for (number, text), c in zip(sentences, cited, strict=True)
        ]
        differential, weights = self.differential(
            image, found, stated_findings(items), notes=notes.expanded, items=items
        )
        impression, impression_items = notes_impression(written, differential)
        self.stages["post_check"] += time.perf_counter() - started - self.stages["differential"]
        limitations = [] if found.evidence.cases else [NO_CASES_LIMITATION]
        limitations += [f"prompt shortened: {note}" for note in prompt.cut] if used_llm else []  # no prompt read
        limitations += list(notes.limitations)
        plain = sum(w.how == "expanded" for w in written)
        if refined and plain:
            limitations.append(
                f"{plain} of {len(written)} notes item(s) written out plainly: the refiner's sentence failed the check"
            )
        return Report(
            findings=findings,
            impression=impression,
            gate=gate,
            evidence=evidence_summary(found.evidence),
            model={**self.model_info, "written": written_by, "items": len(written), "items_plain": plain},
            limitations=limitations,
            mode="notes",
            draft=draft,
            differential=differential,
            differential_weights=weights,
            removed=[r.as_text() for r in removals],
            impression_items=list(impression_items),
        )

    # -- shared ---------------------------------------------------------------------------------------------
    def differential(
        self,
        image: Path,
        found: ImageEvidence,
        stated: Sequence[StatedFinding],
        *,
        notes: str | None = None,
        items: Sequence[NotesItem] = (),
        weigh: Weigher | None = None,
    ) -> tuple[list[DifferentialItem], dict[str, float]]:
        """The ranked differential and the weight each source got: the image's similar cases, the notes' own
        similar cases (with `notes`), and the knowledge base's ranking of the `stated` findings, blended by
        the per-case weights (`weigh`, default the writer's). A diagnosis the notes deny is not offered
        ("no PE" leaves pulmonary embolism out)."""
        started = time.perf_counter()
        k = self.config.differential_cases
        votes = [case_votes("image", self.evidence.similar_diagnoses(found, image, k=k))]
        if notes:
            votes.append(case_votes("text", self.evidence.similar_diagnoses(found, image, text=notes, k=k)))
        if self.diagnoses is not None and stated:
            ev = found.evidence
            ranked = self.diagnoses.rank(stated, modality=ev.modality, region=ev.body_region)
            votes.append(knowledge_votes(ranked))
        weights = (weigh or self.source_weights)(votes)
        offered = fuse(
            votes, weights, limit=self.config.differential_size, denied=partial(contradicts_negatives, items=items)
        )
        self.stages["differential"] = time.perf_counter() - started
        return offered, {s: round(w, 4) for s, w in weights.items()}

    def _add_differential(self, report: Report, image: Path, found: ImageEvidence, stated: list[StatedFinding]) -> None:
        differential, weights = self.differential(image, found, stated)
        report.differential, report.differential_weights = differential, weights

    def _generate(self, batch: Batch, draft: str, budget: int, prefix: str = "") -> tuple[str, float]:
        started = time.perf_counter()
        decoding = DecodingConfig(
            max_new_tokens=budget,
            repetition_penalty=self.config.repetition_penalty,
            no_repeat_ngram=self.config.no_repeat_ngram,
            lookup_tokens=self.config.lookup_tokens,
        )
        texts, gates, results = self.generator.generate(
            batch, decoding, fixed_gate=self.fixed_gate, prefix=prefix, drafts=[draft]
        )
        self.stages["generate"] += time.perf_counter() - started
        self._count(results[0])
        return texts[0], gates[0]

    def _count(self, result: DecodeResult) -> None:
        for key, value in (("forwards", result.forwards), ("tokens", len(result.ids)), ("accepted", result.accepted)):
            self.stages[key] = self.stages.get(key, 0) + value
        self.stages["prefill"] = self.stages.get("prefill", 0.0) + result.prefill_seconds

    def _write(
        self,
        image: Path,
        found: ImageEvidence,
        prompt: Prompt,
        draft: DraftSource,
        budget: int,
        *,
        supported: Collection[str] = (),
        min_votes: int,
        refine: bool = True,
    ) -> Report:
        """The report for `draft`: the refiner's edit (when `refine` and the config allow one), or the draft
        itself when that does not parse, through the post-check."""
        refine = refine and self.config.refine_with_llm
        batch = self._batch(found, prompt)
        texts = self._refined_texts(batch, draft.text, budget) if refine else []
        # The draft itself, through the same post-check: the no-LLM system, and the fallback when the refiner's
        # text does not parse (the report then says so). Its gate is computed only if it comes to that.
        unedited = draft.text if "findings:" in draft.text.lower() else f"Findings: {draft.text}\nImpression: "
        texts.append((unedited, None, "draft unedited"))
        for text, known_gate, how in texts:
            gate = self._gate(batch) if known_gate is None else known_gate
            started = time.perf_counter()
            try:
                report = build_report(
                    text,
                    found.evidence,
                    self.evidence.extractor,
                    gate=gate,
                    prompt=prompt,
                    supported_concepts=supported,
                    min_votes=min_votes,
                    model={**self.model_info, "written": how},
                )
            except ReportParseError:
                continue
            finally:
                self.stages["post_check"] += time.perf_counter() - started
            if how == "draft unedited" and refine:
                report.limitations.append("the refiner's text did not parse: the draft is shown unedited")
            report.draft = draft
            return self._guard(report)
        shown = " | ".join(t[:160].replace("\n", " ") for t, _, _ in texts)
        raise ReportGenerationError(f"{image}: neither the refiner's text nor the draft parse into a report: {shown}")

    @staticmethod
    def _batch(found: ImageEvidence, prompt: Prompt) -> Batch:
        return Batch(
            image=torch.tensor(found.vector[None], dtype=torch.float32),  # a copy: cached query vectors are read-only
            texts=torch.from_numpy(np.ascontiguousarray(found.texts[None])).float(),
            mask=torch.from_numpy(np.ascontiguousarray(found.mask[None])),
            prompts=[prompt.text],
        )

    def _refined_texts(self, batch: Batch, draft: str, budget: int) -> list[tuple[str, float | None, str]]:
        """The refiner's text, then, if it does not parse, a retry forced to start with "Findings:" (and to go
        on with "Impression:"): (text, gate, how it was written), the last one parsing where any does."""
        texts: list[tuple[str, float | None, str]] = []
        for prefix in ("", "Findings:"):
            text, written_gate = self._generate(batch, draft, budget, prefix)
            if prefix and "impression:" not in text.lower():
                text, written_gate = self._generate(batch, draft, budget, text.rstrip() + "\nImpression:")
            texts.append((text, written_gate, "constrained retry" if prefix else "refined"))
            if self._parses(text):
                break
        return texts

    def _gate(self, batch: Batch) -> float:
        with torch.no_grad():
            on = batch.to(self.generator.device)
            return float(self.generator.fusion(on.image, on.texts, on.mask).gate[0])

    @staticmethod
    def _parses(text: str) -> bool:
        try:
            split_sections(text)
        except ReportParseError:
            return False
        return True

    def _guard(self, report: Report) -> Report:
        """Take out sentences stating what nothing supports (when configured), and say so."""
        if not self.config.drop_unsupported:
            return report
        report.removed = [
            removal(s.sentence, f"unsupported: {', '.join(s.unsupported_concept_ids)}")
            for s in report.findings
            if not s.supported
        ]
        report.findings = [s for s in report.findings if s.supported]
        if report.removed:
            report.limitations.append(f"{len(report.removed)} unsupported sentence(s) removed from the findings")
        return report


_SIDE = re.compile(r"\b(right|left|bilateral)\b", re.IGNORECASE)


def _sides(sentence: str) -> set[str]:
    return {m.lower() for m in _SIDE.findall(sentence)}


def _candidates(choice: DraftChoice) -> list[DraftCandidate]:
    return [
        DraftCandidate(
            case_id=c.case_id,
            score=float(c.score),
            agreement=float(choice.selection.agreements[i]),
            selected=i == choice.selection.index,
            text=c.text,
        )
        for i, c in enumerate(choice.candidates)
    ]
