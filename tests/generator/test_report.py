"""Parsing the LLM's text into the structured report: sections, sentences, citations and the post-check,
with the real finding extractor over the bundled ontology."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from kgreport.generator.evidence import Evidence, Prompt, collect_evidence
from kgreport.generator.report import (
    NO_CASES_LIMITATION,
    Report,
    ReportParseError,
    build_report,
    cite,
    split_sections,
    split_sentences,
)
from tests.generator.cases import PRIOR_CASES

if TYPE_CHECKING:
    from kgreport.knowledge.extraction.extractor import FindingExtractor


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("A 2.5 cm mass in the right lobe. No effusion.", ["A 2.5 cm mass in the right lobe.", "No effusion."]),
        ("Seen by Dr. Smith. Fluid, e.g. blood, is seen.", ["Seen by Dr. Smith.", "Fluid, e.g. blood, is seen."]),
        ("Abscess vs. tumor. Is it new? Yes!", ["Abscess vs. tumor.", "Is it new?", "Yes!"]),
        ("1. Pleural effusion.\n2. No pneumothorax.", ["Pleural effusion.", "No pneumothorax."]),
        ("1. Pleural effusion. 2) No pneumothorax.", ["Pleural effusion.", "No pneumothorax."]),
        ("- Cardiomegaly\n- Mild atelectasis", ["Cardiomegaly", "Mild atelectasis"]),
        ("There is a large\nright effusion. Lungs: clear", ["There is a large right effusion.", "Lungs: clear"]),
        ("Measures 3 mm. (i.e. small) Stable.", ["Measures 3 mm.", "(i.e. small) Stable."]),
        ("  \n ", []),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


@pytest.mark.parametrize(
    ("text", "sections"),
    [
        ("Findings: Effusion. No mass.\nImpression: Effusion.", ("Effusion. No mass.", "Effusion.")),
        ("findings:\nEffusion.\n\nimpression:\nEffusion.", ("Effusion.", "Effusion.")),
        ("  FINDINGS: Effusion.", ("Effusion.", "")),
        ("Findings: Effusion. Impression: Small effusion.", ("Effusion.", "Small effusion.")),
        ("Ok!\n**Findings:** Effusion.\n**Impression:** Effusion.\nHistory: 6M.\nNote: x", ("Effusion.", "Effusion.")),
        ("## Findings\nEffusion.\n## Impression\nEffusion.<|im_end|>\n<|im_start|>user", ("Effusion.", "Effusion.")),
        ("Effusion without headings.", ("Effusion without headings.", "")),
        ("Findings: Effusion.\nDiagnosis: Empyema.", ("Effusion.", "Empyema.")),
        ("Findings: Effusion.\nImpression: Effusion.\nDiagnosis: Empyema.", ("Effusion.", "Effusion.")),
        ("Lungs: clear.\nHeart: normal.\nImpression: Normal.", ("Lungs: clear.\nHeart: normal.", "Normal.")),
    ],
)
def test_split_sections(text: str, sections: tuple[str, str]) -> None:
    assert split_sections(text) == sections


@pytest.mark.parametrize("text", ["", "   ", "Impression: Normal.", "Findings:\nImpression: Normal.", "<|im_end|>"])
def test_no_findings_is_a_parse_error(text: str) -> None:
    with pytest.raises(ReportParseError):
        split_sections(text)


@pytest.fixture(scope="module")
def evidence(extractor: FindingExtractor) -> Evidence:
    return collect_evidence(PRIOR_CASES, extractor, None)


def concept_of(evidence: Evidence, name: str) -> str:
    return next(f.concept_id for f in evidence.findings if f.name.lower() == name)


@pytest.mark.slow
def test_cite_supports_flags_and_keeps_negations(extractor: FindingExtractor, evidence: Evidence) -> None:
    text = "Large right pleural effusion. No pneumothorax. Splenomegaly is present. The heart is normal."
    effusion, negated, spleen, plain = cite(text, evidence, extractor)

    assert (effusion.status, effusion.supported) == ("present", True)
    assert effusion.concept_ids == (concept_of(evidence, "pleural effusion"),)
    assert effusion.cited_case_ids == ("MPX1", "MPX2", "MPX3")  # MPX3 mentions it too (absent)

    assert (negated.sentence, negated.status, negated.supported) == ("No pneumothorax.", "absent", True)
    assert negated.cited_case_ids == ("MPX1",)

    assert (spleen.status, spleen.supported, spleen.cited_case_ids) == ("present", False, ())
    assert spleen.unsupported_concept_ids == spleen.concept_ids and len(spleen.concept_ids) == 1

    assert (plain.status, plain.supported, plain.concept_ids, plain.cited_case_ids) == ("none", True, (), ())

    # another source (an image classifier, graph neighbours) may back a finding no case states
    backed = cite("Splenomegaly is present.", evidence, extractor, supported_concepts=spleen.concept_ids)
    assert backed[0].supported and backed[0].unsupported_concept_ids == ()


@pytest.mark.slow
def test_cases_only_stating_absence_do_not_support(extractor: FindingExtractor, evidence: Evidence) -> None:
    (claim,) = cite("Possible pneumothorax.", evidence, extractor)
    assert (claim.status, claim.supported, claim.cited_case_ids) == ("uncertain", False, ("MPX1",))


@pytest.mark.slow
def test_cite_extracts_cases_given_as_plain_text(extractor: FindingExtractor, evidence: Evidence) -> None:
    plain = Evidence(PRIOR_CASES, ())  # no statements, no findings: cite reads the cases itself
    text = "Small pleural effusion. Lung mass. No pneumothorax."
    assert cite(text, plain, extractor) == cite(text, evidence, extractor)


@pytest.mark.slow
def test_build_report_round_trips(extractor: FindingExtractor, evidence: Evidence) -> None:
    text = (
        "Here is the report.\nFINDINGS: Small right pleural effusion. No pneumothorax. Splenomegaly.\n"
        "IMPRESSION: Pleural effusion.\nNote: I am an AI.<|im_end|>"
    )
    prompt = Prompt("...", ("MPX1",), (), ("2 cases dropped (MPX2, MPX3)",))
    report = build_report(text, evidence, extractor, gate=0.25, prompt=prompt, model={"llm": "smollm2-135m"})
    assert [s.status for s in report.findings] == ["present", "absent", "present"]
    assert [s.supported for s in report.findings] == [True, True, False]
    assert report.impression == "Pleural effusion."
    assert report.limitations[0] == "prompt shortened: 2 cases dropped (MPX2, MPX3)"
    assert report.limitations[1].startswith("findings stated that no prior case or other source supports")
    assert report.evidence["cases"][0] == {"case_id": "MPX1", "score": 0.91, "modality": "CT", "body_region": "Thorax"}
    assert report.evidence["concepts"][0]["votes"] == 2

    as_json = report.as_json()
    assert json.loads(json.dumps(as_json)) == as_json
    assert Report.from_json(json.loads(json.dumps(as_json))) == report

    again = build_report(report.as_text(), evidence, extractor, gate=0.25, prompt=None)
    assert again.findings == report.findings  # "No pneumothorax." stays absent
    assert report.as_text().startswith("Findings:\nSmall right pleural effusion. No pneumothorax.")


@pytest.mark.slow
def test_report_without_prior_cases(extractor: FindingExtractor) -> None:
    text = "Findings: No pleural effusion. Lung mass."
    report = build_report(text, Evidence((), ()), extractor, gate=1.0, prompt=None)
    assert report.limitations[0] == NO_CASES_LIMITATION
    assert [(s.status, s.supported) for s in report.findings] == [("absent", True), ("present", False)]
    assert report.evidence == {"cases": [], "concepts": []} and report.impression == ""
