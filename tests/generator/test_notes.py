"""Typed notes: cleaned, capped and expanded; simulated notes built from a report's findings only."""

from __future__ import annotations

import random
import re

import pytest

from kgreport.generator.notes import MAX_NOTES_CHARS, Notes, NotesError, prepare_notes, simulate_notes
from kgreport.knowledge.extraction.extractor import Finding, FindingExtractor
from kgreport.knowledge.extraction.shorthand import expand_shorthand

REPORT = "There is a large right pleural effusion. No pneumothorax. A 2 cm spiculated nodule in the right upper lobe."
SAMPLE_REPORTS = (
    REPORT,
    "Acute appendicitis with periappendiceal abscess. No free air. Mild hepatic steatosis. No hydronephrosis.",
    "Acute subdural hematoma along the left convexity with midline shift. No subarachnoid hemorrhage. "
    "Hydrocephalus is not seen.",
    "Bilateral pulmonary emboli in the lower lobe arteries. Small left pleural effusion. Mediastinal "
    "lymphadenopathy. Findings may represent pneumonia versus atelectasis.",
    "Multiple hypodense liver lesions consistent with metastases. Splenomegaly. Cholelithiasis without "
    "cholecystitis. No ascites.",
    "Comminuted fracture of the distal radius. Soft tissue swelling. No dislocation.",
    "Abdominal aortic aneurysm measuring 5.5 cm with mural thrombus. No retroperitoneal hemorrhage. "
    "Left kidney stone with mild hydronephrosis.",
)


def _finding(concept_id: str, name: str, status: str, text: str | None = None) -> Finding:
    return Finding(concept_id, name, text or name.lower(), 0, 0, status)


FINDINGS = [
    _finding("C1", "Pleural Effusion", "present", "right pleural effusion"),
    _finding("C2", "pneumothorax", "absent"),
    _finding("C3", "shaggy lung nodule", "present", "spiculated nodule"),
    _finding("C4", "pneumonia", "uncertain"),
    _finding("C5", "mediastinal and/or hilar lymph node enlargement", "present", "mediastinal lymphadenopathy"),
]


def test_no_empty_and_control_characters() -> None:
    assert prepare_notes(None) is None
    for empty in ("", "   \n\t ", "\x00\x07\u200b\n"):
        with pytest.raises(NotesError, match="notes are empty"):
            prepare_notes(empty)
    assert issubclass(NotesError, ValueError)
    notes = prepare_notes("RUL\x00 2cm\x1b nodule\r\nno PTX\t")
    assert notes == Notes(
        raw="RUL 2cm nodule\nno PTX", expanded="right upper lobe 2 cm nodule. no pneumothorax.", limitations=()
    )
    with pytest.raises(NotesError, match="max_chars"):
        prepare_notes("RUL nodule", max_chars=0)


def test_long_notes_are_cut_at_a_boundary_and_said_so() -> None:
    text = "no effusion, " * 7_693 + "RUL nodule"  # 100,019 characters
    notes = prepare_notes(text)
    assert notes is not None and len(notes.raw) <= MAX_NOTES_CHARS
    assert notes.limitations == (f"notes cut to {MAX_NOTES_CHARS} of {len(text)} characters",)
    assert notes.raw.endswith("no effusion,")
    short = prepare_notes("RUL 2cm spiculated nodule with mediastinal LAD", max_chars=30)
    assert short is not None and short.raw == "RUL 2cm spiculated nodule with"
    assert short.limitations == ("notes cut to 30 of 46 characters",)
    unbroken = prepare_notes("x" * 50, max_chars=10)
    assert unbroken is not None and unbroken.raw == "x" * 10
    assert prepare_notes("RUL nodule", max_chars=10) == Notes("RUL nodule", "right upper lobe nodule.", ())


def test_simulated_notes_are_deterministic_and_keep_statuses() -> None:
    notes = simulate_notes(FINDINGS, random.Random(11))
    assert notes == simulate_notes(FINDINGS, random.Random(11))
    assert len({simulate_notes(FINDINGS, random.Random(seed)) for seed in range(8)}) > 1
    assert simulate_notes([], random.Random(0)) == ""
    for seed in range(20):
        expanded = expand_shorthand(simulate_notes(FINDINGS, random.Random(seed)))
        assert "no pneumothorax" in expanded
        assert "possible pneumonia" in expanded
        assert "right pleural effusion" in expanded.lower()  # the side its own text span states
        assert "shaggy lung nodule" in expanded and "spiculated" not in expanded  # the name, not the text


def test_one_phrase_per_concept_the_most_positive_and_nothing_essential_dropped() -> None:
    twice = [_finding("C2", "pneumothorax", "absent"), _finding("C2", "pneumothorax", "present")]
    for seed in range(10):
        notes = expand_shorthand(simulate_notes(twice, random.Random(seed)))
        assert notes == "pneumothorax"
    dropped = simulate_notes(FINDINGS, random.Random(1), drop_word_rate=1.0)
    assert "and/or" not in dropped and re.search(r"\bno (pneumothorax|PTX)\b", dropped)
    assert "enlargement" in dropped and "mediastinal hilar" in dropped


@pytest.mark.slow
def test_notes_never_copy_the_report_and_keep_its_negations(extractor: FindingExtractor) -> None:
    findings = extractor.extract(REPORT)
    assert {f.name.lower(): f.status for f in findings} == {
        "pleural effusion": "present",
        "pneumothorax": "absent",
        "shaggy lung nodule": "present",
    }
    sentences = [s.strip().lower() for s in REPORT.split(".") if len(s.split()) > 3]
    for seed in range(10):
        notes = simulate_notes(findings, random.Random(seed))
        expanded = expand_shorthand(notes).lower()
        assert not any(s in notes.lower() or s in expanded for s in sentences)
        assert re.search(r"\bno (pneumothorax|PTX|pneumo)\b", notes)
        prepared = prepare_notes(notes)
        assert prepared is not None
        back = {f.name.lower(): f.status for f in extractor.extract(prepared.expanded)}
        assert back["pneumothorax"] == "absent"


@pytest.mark.slow
def test_extracting_expanded_notes_recovers_the_present_findings(extractor: FindingExtractor) -> None:
    references = extractor.extract_many(SAMPLE_REPORTS)
    wanted = recovered = 0
    for seed in range(3):
        rng = random.Random(seed)
        for findings in references:
            present = {f.concept_id for f in findings if f.status == "present"}
            prepared = prepare_notes(simulate_notes(findings, rng))
            assert prepared is not None
            back = {f.concept_id for f in extractor.extract(prepared.expanded) if f.status == "present"}
            wanted += len(present)
            recovered += len(present & back)
    assert wanted >= 40
    assert recovered / wanted >= 0.8  # measured: 1.0 here, 0.996 over the bundled demo archive's findings
