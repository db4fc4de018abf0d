"""The notes benchmark's scorer: rules only, so its verdicts are checked on sentences written here by hand."""

import json
from pathlib import Path

from kgreport.benchmarks.notes_scoring import (
    Fact,
    mentions,
    names_diagnosis,
    score_case,
    split_sentences,
    summary,
    truncated,
)

REPO = Path(__file__).resolve().parents[2]
EFFUSION = Fact("pleural effusion", ("effusion",), "absent", None, ())
MASS = Fact("mass", ("lesion",), "present", "right", ("3.2 x 2.8 cm",))


def test_negation_is_read_in_the_clause_before_and_from_what_follows() -> None:
    assert mentions(EFFUSION, ["No pleural effusion is seen."]) == [("No pleural effusion is seen.", True)]
    assert mentions(EFFUSION, ["A pleural effusion is not seen."])[0][1]
    assert not mentions(EFFUSION, ["There is no consolidation, but a small effusion is present."])[0][1]
    assert mentions(EFFUSION, ["The lungs are clear."]) == []


def test_a_case_scored_fact_by_fact() -> None:
    score = score_case(
        facts=[EFFUSION, MASS],
        notes="R mass 3.2x2.8 cm; no effusion",
        findings=["There is a mass in the right frontal lobe measuring 3.2 x 2.8 cm.", "There is an effusion."],
        impression="Right frontal mass, most consistent with glioblastoma multiforme.",
        differential=["Glioblastoma multiforme", "Metastasis"],
        diagnosis_names=["glioblastoma"],
    )
    assert (score.facts, score.recalled, score.missed) == (2, 1, ["pleural effusion"])
    assert (score.negation_flips, score.flipped) == (1, ["pleural effusion"])
    assert (score.sided, score.side_kept, score.numbers, score.numbers_kept) == (1, 1, 1, 1)
    assert score.diagnosis_top1 and score.truncated == 0 and score.words_ratio == 18 / 6
    pooled = summary([score])
    assert pooled["fact_recall"] == 0.5 and pooled["negation_flips"] == 1 and pooled["sentences"] == 3


def test_image_only_drafts_may_not_state_anothers_details_or_a_diagnosis() -> None:
    score = score_case(
        facts=[],
        notes="",
        findings=["This mass measures approximately 2.9 cm.", "The liver is normal."],
        impression="Malignant melanoma.",
        differential=[],
        diagnosis_names=["melanoma"],
        image_only=True,
    )
    assert score.foreign_details == 2
    listed = score_case(
        facts=[],
        notes="",
        findings=[],
        impression="Similar prior cases: Glioma (MPX1).",
        differential=[],
        diagnosis_names=[],
        image_only=True,
    )
    assert listed.foreign_details == 0


def test_cut_sentences_and_strict_diagnosis_names() -> None:
    assert (
        truncated("The cord signal") and truncated("associated with a large right-.") and truncated("with multiple ...")
    )
    assert not truncated("The cord signal is normal.")
    assert names_diagnosis("Renal cell carcinoma, clear cell type", ["renal cell carcinoma"])
    assert not names_diagnosis("Carcinoma", ["renal cell carcinoma"])
    assert split_sentences("No PTX. Mass right.\nLiver normal.") == ["No PTX.", "Mass right.", "Liver normal."]


def test_the_dev_notes_are_well_formed() -> None:
    cases = [json.loads(line) for line in (REPO / "data" / "notes" / "dev.jsonl").read_text().splitlines()]
    assert len(cases) >= 60 and len({c["case_id"] for c in cases}) == len(cases)
    for case in cases:
        assert case["notes"].strip() and case["facts"] and case["diagnosis_names"], case["case_id"]
        for fact in map(Fact.from_json, case["facts"]):
            assert fact.status in {"present", "absent", "uncertain"} and fact.side in {
                None,
                "right",
                "left",
                "bilateral",
            }


def test_normal_states_sides_and_levels_are_read_as_a_report_writes_them() -> None:
    tendons = Fact("tendon abnormality", ("tendons are normal", "tendons"), "absent", None, ())
    assert mentions(tendons, ["The tendons are normal."]) == [("The tendons are normal.", True)]
    embolism = Fact("pulmonary embolism", ("pe",), "absent", None, ())
    assert mentions(embolism, ["CTA chest, pulmonary embolism protocol."]) == []
    defects = Fact("filling defects", (), "present", "bilateral", ("C2-C3",))
    score = score_case(
        facts=[defects], notes="", findings=["There are filling defects right and left at C2-3."], impression="",
        differential=[], diagnosis_names=[],
    )  # fmt: skip
    assert (score.side_kept, score.numbers_kept) == (1, 1)
