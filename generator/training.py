"""Training the refiner, first half: examples from an indexed archive (`generator.fit` fits them).

The refiner edits a draft into a report. An example is one image of a case: its CT-encoder vector, the top-k
cases the searcher retrieves for it (the leakage guard keeps its own case and patient out), their stored
report vectors, and a prompt with the evidence and the draft. Three kinds, one of each per image:

- `edit`: the draft is the retrieved report that the pipeline would choose (`generator.draft`);
- `repair`: the draft is the reference damaged in one known way (`generator.repairs`), and the evidence
  lists the reference's findings: the answer is recoverable from the input;
- `notes`: the draft is shorthand notes simulated from the reference's findings (`generator.notes`), and
  the cases are found by image and notes together, as `kgreport report --notes` finds them;
- `hand_notes`: the draft is notes written by hand for the case, and the answer is the report written by
  hand from those notes alone (`generator.hand_notes`): the refiner learns to write notes out, not to add.

The answer is the reference: "Findings: <the image's caption> <the case's findings>" then
"Impression: <its impression or diagnosis>", cut to word budgets. Building needs the index, the graph and
the encoders; fitting needs only the LLM, so the two can run on different machines (`fit.save_examples`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from kgreport.generator.confidence import USABLE_F1
from kgreport.generator.config import WriterConfig
from kgreport.generator.draft import draft_text
from kgreport.generator.evidence import (
    CLAIM_STATUSES,
    CaseEvidence,
    DraftSource,
    EvidenceBuilder,
    ImageEvidence,
    collect_evidence,
)
from kgreport.generator.fit import Example
from kgreport.generator.hand_notes import HandNotes
from kgreport.generator.notes import prepare_notes, simulate_notes
from kgreport.generator.refine import choose_draft
from kgreport.generator.repairs import damage
from kgreport.generator.report import split_sentences
from kgreport.retrieval.records import Case, CaseImage

if TYPE_CHECKING:
    from kgreport.knowledge.extraction.extractor import Finding

KINDS = ("edit", "repair", "notes", "hand_notes")
DEFAULT_KINDS = ("edit", "repair", "notes")


def reference_report(case: Case, image: CaseImage, config: WriterConfig | None = None) -> str:
    """What the refiner learns to produce for `image`: its caption and its case's findings, then impression."""
    config = config or WriterConfig()
    findings = " ".join(x.strip() for x in (image.caption, case.report.findings) if x and x.strip())
    impression = (case.report.impression or case.report.diagnosis).strip()
    return draft_text(
        findings, impression, findings_words=config.findings_words, impression_words=config.impression_words
    )


def _example(
    case: Case, image: CaseImage, found: ImageEvidence, prompt: str, target: str, kind: str, draft: str
) -> Example:
    return Example(
        case_id=case.case_id,
        image_id=image.image_id,
        image=found.vector,
        texts=found.texts,
        mask=found.mask,
        prompt=prompt,
        target=target,
        cited=tuple(c.case_id for c in found.evidence.cases),
        kind=kind,
        draft=draft,
    )


def build_examples(
    cases: Sequence[Case],
    builder: EvidenceBuilder,
    config: WriterConfig,
    progress: Callable[[int], None] | None = None,
    *,
    images_per_case: int | None = None,
    kinds: Sequence[str] = DEFAULT_KINDS,
    seed: int = 0,
    hand_notes: Mapping[str, HandNotes] | None = None,
) -> list[Example]:
    """Examples of each of `kinds` for every readable image of `cases` (the first `images_per_case` of each,
    if given); unreadable images are skipped. `hand_notes` (by case id) are the notes of `hand_notes`
    examples, one for the image they were written for."""
    rng = random.Random(seed)
    foreign = [s for c in cases for s in split_sentences(c.report.findings)[:3]]
    examples = []
    for case in cases:
        if case.report.is_empty():
            continue  # an image-only case (a PACS study without a report) has nothing to learn to write
        if "hand_notes" in kinds and hand_notes and (written := hand_notes.get(case.case_id)):
            examples += _hand_notes_examples(case, written, builder, config)
        if not set(kinds) - {"hand_notes"}:
            if progress:
                progress(1)
            continue
        for image in case.images[:images_per_case]:
            try:
                found = builder.for_image(image.path)
            except (OSError, ValueError):
                continue
            target = reference_report(case, image, config)
            findings, _, impression = target.removeprefix("Findings: ").partition("\nImpression: ")
            stated = builder.extractor.extract_many([f"{findings} {impression}"])[0]
            if "edit" in kinds and found.hits:
                choice = choose_draft(found, config, builder.image_text_scores(found))
                example = _example(
                    case,
                    image,
                    found,
                    builder.prompt(found.evidence, choice.source).text,
                    target,
                    "edit",
                    choice.source.text,
                )
                example.features = choice.features
                example.usable = present_f1(choice.chosen.present, claimed(stated)) >= USABLE_F1
                examples.append(example)
            if "repair" in kinds and (damaged := damage(findings, rng, [s for s in foreign if s not in findings])):
                draft = DraftSource("case", draft_text(damaged[0], impression), case.case_id)
                own = CaseEvidence(case.case_id, 1.0, findings, impression)
                voted = collect_evidence(
                    [own, *found.evidence.cases],
                    builder.extractor,
                    builder.graph,
                    index=builder.index,
                    modality=found.evidence.modality,
                    body_region=found.evidence.body_region,
                )
                shown = replace(voted, cases=tuple(c for c in voted.cases if c.case_id != case.case_id))
                examples.append(
                    _example(case, image, found, builder.prompt(shown, draft).text, target, "repair", draft.text)
                )
            if "notes" in kinds and (notes := simulate_notes(stated, rng)):
                prepared = prepare_notes(notes, config.max_notes_chars)
                assert prepared is not None
                hybrid = builder.for_image(image.path, text=prepared.expanded)
                draft = DraftSource("notes", prepared.expanded)
                examples.append(
                    _example(case, image, hybrid, builder.prompt(hybrid.evidence, draft).text, target, "notes", notes)
                )
        if progress:
            progress(1)
    return examples


def _hand_notes_examples(
    case: Case, written: HandNotes, builder: EvidenceBuilder, config: WriterConfig
) -> list[Example]:
    image = next((i for i in case.images if written.image in (i.image_id, i.path.stem)), None)
    prepared = prepare_notes(written.notes, config.max_notes_chars)
    if image is None or prepared is None:
        return []
    try:
        found = builder.for_image(image.path, text=prepared.expanded)
    except (OSError, ValueError):
        return []
    draft = DraftSource("notes", prepared.expanded)
    prompt = builder.prompt(found.evidence, draft).text
    return [_example(case, image, found, prompt, written.target, "hand_notes", written.notes)]


def claimed(findings: Sequence[Finding]) -> frozenset[str]:
    """The concepts a text states present or possible."""
    return frozenset(f.concept_id for f in findings if f.status in CLAIM_STATUSES)


def present_f1(a: frozenset[str], b: frozenset[str]) -> float:
    """F1 of two sets of stated concepts; two empty sets agree."""
    return 2 * len(a & b) / (len(a) + len(b)) if a or b else 1.0
