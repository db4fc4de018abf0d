"""Evidence for the report writer: sections of hit reports, votes of the real extractor over prior case
findings, facts from the real ontology graph, and the prompt's budget cuts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from kgreport.generator.evidence import (
    FACT_WORDS,
    INSTRUCTION,
    NO_CASES,
    CaseEvidence,
    Evidence,
    EvidenceBuilder,
    FindingEvidence,
    build_prompt,
    collect_evidence,
    evidence_from_hits,
    facts_line,
)
from kgreport.knowledge.grounding import Grounding
from kgreport.retrieval.records import Case, CaseImage, Hit, ReportSections
from tests.generator.cases import PRIOR_CASES

if TYPE_CHECKING:
    from kgreport.knowledge.extraction.extractor import FindingExtractor
    from kgreport.knowledge.graph import GraphBackend

REPO = Path(__file__).resolve().parents[2]


def words(text: str) -> int:
    return len(text.split())


def test_evidence_from_hits_takes_findings_and_impression() -> None:
    report = ReportSections(
        history="60M with cough.", findings="Right pleural effusion.", impression="Effusion.", diagnosis="Empyema"
    ).text()
    hits = [
        Hit("MPX1", "img1", 0.9, "CT", "Thorax", report),
        Hit("MPX1", "img2", 0.7, "CT", "Thorax", report),  # a second image of the same case
        Hit("MPX2", "img3", 0.6, None, None, "Small effusion without any headings."),
    ]
    cases = evidence_from_hits(hits)
    assert [c.case_id for c in cases] == ["MPX1", "MPX2"]
    assert cases[0] == CaseEvidence("MPX1", 0.9, "Right pleural effusion.", "Effusion.\nEmpyema", "CT", "Thorax")
    assert cases[1].findings == "Small effusion without any headings." and cases[1].impression == ""


def test_a_hit_without_a_report_is_no_evidence() -> None:
    """An image-only case (indexed without a report) states nothing: it is no case of the votes."""
    hits = [
        Hit("PACS1", "img1", 0.95, "CT", "Thorax", ""),
        Hit("MPX2", "img2", 0.9, "CT", "Thorax", "Findings: Small effusion."),
        Hit("PACS2", "img3", 0.8, "CT", "Thorax", "  "),
    ]
    assert [c.case_id for c in evidence_from_hits(hits)] == ["MPX2"]


@pytest.mark.slow
def test_the_builder_drafts_and_cites_only_cases_with_a_report(tmp_path: Path, extractor: FindingExtractor) -> None:
    """With image-only cases in the index, the writer's k cases (hits, report vectors, votes) all have a
    report, though plain image search finds the others too."""
    from kgreport.retrieval.config import SearchConfig
    from kgreport.retrieval.encoders.image_encoder import load_image_encoder
    from kgreport.retrieval.encoders.text_encoder import TextEncoder
    from kgreport.retrieval.encoders.volume_embedding import embed_decoded
    from kgreport.retrieval.imaging import load_case_image
    from kgreport.retrieval.search import CaseSearcher, Query
    from kgreport.retrieval.stores.local.store import CaseStore

    image_encoder, text_encoder = load_image_encoder(REPO / "data" / "models" / "ct-encoder"), TextEncoder()
    query, *paths = sorted((REPO / "data" / "demo" / "images").glob("*.jpg"))[:7]
    cases = [
        Case(
            f"C{n}", (CaseImage(f"C{n}/1", path),), ReportSections(findings="Right pleural effusion." if n % 2 else "")
        )
        for n, path in enumerate(paths)
    ]
    store = CaseStore.create_for(tmp_path / "idx", image_encoder, text_encoder)
    store.add_cases(
        [
            (
                c,
                {c.images[0].image_id: embed_decoded(image_encoder, [load_case_image(c.images[0])])[0]},
                text_encoder.embed([c.report.text()])[0] if c.report.text() else np.zeros(text_encoder.dim),
            )
            for c in cases
        ]
    )
    searcher = CaseSearcher(store, image_encoder, text_encoder, SearchConfig(leakage_guard=False))
    assert len(searcher.search(Query(image=query), k=len(cases)).hits) == len(cases)
    reported = {c.case_id for c in cases if c.report.text()}
    builder = EvidenceBuilder(searcher, extractor, None, None, lambda text: len(text.split()), k=len(cases))
    found = builder.for_image(query)
    assert {h.case_id for h in found.hits} == reported and all(h.report for h in found.hits)
    assert found.mask.sum() == len(reported) and np.abs(found.texts[found.mask]).sum(axis=1).all()
    assert {c.case_id for c in found.evidence.cases} == reported
    assert found.evidence.findings and found.evidence.findings[0].votes == len(reported)
    store.close()


@pytest.mark.slow
def test_collect_evidence_votes_and_grounds(extractor: FindingExtractor, full_graph: GraphBackend) -> None:
    evidence = collect_evidence(PRIOR_CASES, extractor, full_graph, modality="CT", body_region="Thorax")
    by_name = {f.name.lower(): f for f in evidence.findings}
    assert [f.name.lower() for f in evidence.findings] == ["pleural effusion", "lung mass", "pneumothorax"]
    effusion, mass, pneumothorax = (by_name[n] for n in ("pleural effusion", "lung mass", "pneumothorax"))
    assert (effusion.status, effusion.votes, effusion.case_ids) == ("present", 2, ("MPX1", "MPX2"))
    assert effusion.absent_case_ids == ("MPX3",)
    assert (mass.status, mass.votes, mass.case_ids) == ("present", 1, ("MPX3",))
    assert (pneumothorax.status, pneumothorax.votes, pneumothorax.case_ids) == ("absent", 0, ())
    assert pneumothorax.absent_case_ids == ("MPX1",)
    assert effusion.facts.startswith("is a: effusion") and len(effusion.facts.split()) <= 25
    assert all(c.statements is not None for c in evidence.cases)  # kept for citing without re-extraction
    assert (evidence.modality, evidence.body_region) == ("CT", "Thorax")

    top = collect_evidence(PRIOR_CASES, extractor, None, max_findings=2)
    assert [f.name.lower() for f in top.findings] == ["pleural effusion", "lung mass"]
    assert all(f.facts == "" for f in top.findings)  # no graph, no facts


@pytest.mark.slow
def test_status_ties_prefer_present_then_uncertain(extractor: FindingExtractor) -> None:
    cases = [
        CaseEvidence("A", 0.9, "Possible pneumothorax. Cardiomegaly."),
        CaseEvidence("B", 0.8, "No pneumothorax. No cardiomegaly."),
    ]
    by_name = {f.name.lower(): f for f in collect_evidence(cases, extractor, None).findings}
    assert by_name["pneumothorax"].status == "uncertain"
    assert by_name["pneumothorax"].uncertain_case_ids == ("A",)
    assert by_name["cardiomegaly"].status == "present"


def test_facts_line_is_short() -> None:
    name = {"name": "a long ontology concept name"}
    grounding = Grounding(
        "X", "x", "radlex", ancestors=[name] * 5, locations=[{"name": "pleura"}], differential_diagnoses=[name] * 3
    )
    line = facts_line(grounding)
    assert line.startswith("is a: a long ontology concept name") and len(line.split()) <= FACT_WORDS
    assert facts_line(Grounding("Y", reason="unknown concept id 'Y'")) == ""


def evidence_for_prompt() -> Evidence:
    cases = tuple(
        CaseEvidence(
            f"C{i}", 0.9 - i / 10, " ".join(f"c{i}w{j}" for j in range(80)), modality="CT", body_region="Thorax"
        )
        for i in (1, 2, 3)
    )
    findings = tuple(
        FindingEvidence(f"F{i}", f"finding {i}", "present", 4 - min(i, 3), ("C1",), facts=f"is a: parent{i}, root")
        for i in (1, 2, 3, 4, 5)
    )
    return Evidence(cases, findings, modality="CT", body_region="Thorax")


def finding_line(text: str, concept_id: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"- finding {concept_id[1:]}:"))


def test_prompt_layout_when_it_fits() -> None:
    prompt = build_prompt(evidence_for_prompt(), words, 10_000, case_words=5)
    lines = prompt.text.splitlines()
    assert lines[0] == "New image (predicted): CT, Thorax"
    assert lines[1] == "Similar prior cases:"
    assert lines[2] == "[C1] (CT, Thorax, 0.80) c1w0 c1w1 c1w2 c1w3 c1w4 ..."
    assert "- finding 1: present 1/3; is a: parent1, root" in lines
    assert lines[-1] == INSTRUCTION
    assert prompt.cases_used == ("C1", "C2", "C3") and prompt.concepts_used == ("F1", "F2", "F3", "F4", "F5")
    assert prompt.cut == ()


def test_prompt_cuts_follow_the_priority_order() -> None:
    evidence = evidence_for_prompt()
    full = words(build_prompt(evidence, words, case_words=60, budget=10_000).text)

    first = build_prompt(evidence, words, case_words=60, budget=full - 1)
    assert first.cut == ("graph facts of 1 finding dropped",)
    assert "is a" not in finding_line(first.text, "F5") and "is a" in finding_line(first.text, "F4")

    for budget in range(full, 0, -1):
        prompt = build_prompt(evidence, words, case_words=60, budget=budget)
        text, notes = prompt.text, " | ".join(prompt.cut)
        assert text.endswith(INSTRUCTION) and prompt.cases_used[0] == "C1"
        assert prompt.cases_used == ("C1", "C2", "C3")[: len(prompt.cases_used)]  # dropped from the last
        assert prompt.concepts_used == ("F1", "F2", "F3", "F4", "F5")[: len(prompt.concepts_used)]
        assert all("is a" in finding_line(text, f) for f in ("F1", "F2", "F3"))  # top 3 keep their facts
        shown = [f for f in ("F4", "F5") if f in prompt.concepts_used and "is a" in finding_line(text, f)]
        assert shown in ([], ["F4"], ["F4", "F5"])  # facts go from the last
        if len(prompt.cases_used) < 3:
            assert shown == []
        if len(prompt.concepts_used) < 5:
            assert prompt.cases_used == ("C1",)
        if "shortened" in notes:
            assert prompt.concepts_used == ("F1", "F2", "F3")
        if words(text) > budget:
            assert "over budget" in notes and "\n[C1] (CT, Thorax, 0.80) ...\n" in text
        else:
            assert "over budget" not in notes

    # facts 2 x 4 words, cases 2 x 65, findings 2 x 5: 148 words; 10 more come off the top case's 60
    squeezed = build_prompt(evidence, words, case_words=60, budget=full - 158)
    assert squeezed.cut == (
        "graph facts of 2 findings dropped",
        "2 cases dropped (C2, C3)",
        "2 findings dropped (finding 4, finding 5)",
        "case C1 findings shortened to 50 words",
    )
    assert words(squeezed.text) == full - 158


def test_prompt_without_cases() -> None:
    prompt = build_prompt(Evidence((), ()), words, 100)
    assert prompt.text == f"{NO_CASES}\n{INSTRUCTION}"
    assert prompt.cases_used == () and prompt.concepts_used == () and prompt.cut == ()
    tight = build_prompt(Evidence((), ()), words, 3)
    assert tight.text.endswith(INSTRUCTION) and "over budget" in tight.cut[-1]
