"""Notes mode's Findings (the refiner's checked sentences, else each item written out) and its Impression."""

import pytest

from kgreport.generator.differential import DifferentialItem
from kgreport.generator.notes_findings import contradicts_negatives, impression, stated_findings, write_findings
from kgreport.knowledge.extraction.notes_items import split_items

NOTES = "R frontal mass 3.2 x 2.8cm; no MLS; T2 hyperint edema ?"


def test_every_item_is_written_in_order_and_wrong_sentences_are_removed_with_a_reason() -> None:
    items = split_items(NOTES)
    refined = [
        "There is a right frontal mass measuring 3.2 x 2.8 cm.",
        "There is midline shift.",  # flips the notes' "no MLS"
        "The spleen is enlarged.",  # nothing the notes say
        "There is a right frontal mass measuring 3.2 x 2.8 cm.",  # said twice
    ]
    written, removed = write_findings(items, refined)
    assert [w.item.index for w in written] == [0, 1, 2]
    assert [w.how for w in written] == ["refined", "expanded", "expanded"]
    assert written[0].sentences == ("There is a right frontal mass measuring 3.2 x 2.8 cm.",)
    assert written[1].sentences == ("No midline shift is seen.",)
    assert written[2].sentences == ("There is possible T2 hyperintense edema.",)
    reasons = {r.sentence: r.reason for r in removed}
    assert reasons["The spleen is enlarged."] == "states nothing the notes say"
    assert reasons["There is midline shift."] == "notes item 2: states it present where the notes say absent"
    assert reasons["There is a right frontal mass measuring 3.2 x 2.8 cm."] == "notes item 1: repeats a sentence"


def test_no_refiner_text_still_writes_every_item() -> None:
    written, removed = write_findings(split_items(NOTES), [])
    assert removed == [] and all(w.how == "expanded" and w.sentences for w in written)


def test_the_exam_is_written_as_typed() -> None:
    written, removed = write_findings(split_items("NCCT head: no hemorrhage"), ["Non-contrast CT of the head."])
    assert [w.item.kind for w in written] == ["technique", "finding"]
    assert written[1].sentences == ("No hemorrhage is seen.",)


def test_the_impression_leads_with_the_findings_and_hedges_the_differential() -> None:
    written, _ = write_findings(split_items(NOTES), [])
    agreed = DifferentialItem("Glioblastoma", 0.9, case_ids=("MPX1",), concept_ids=("RID1",))
    other = DifferentialItem("Metastasis", 0.5, case_ids=("MPX2", "MPX3"))
    guess = DifferentialItem("Optic neuritis", 0.4, case_ids=("MPX4",))  # one neighbour's diagnosis: not named
    text, cited = impression(written, [agreed, guess, other])
    assert text == (
        "Right frontal mass measuring 3.2 x 2.8 cm and possible T2 hyperintense edema, most consistent with "
        "Glioblastoma; differential includes Metastasis."
    )
    assert cited == (1, 3)
    text, _ = impression(written, [other, agreed])  # the cases alone: no "most consistent with"
    assert text.endswith(". Differential includes Metastasis, Glioblastoma.")
    assert (
        impression(written, [guess])[0]
        == "Right frontal mass measuring 3.2 x 2.8 cm and possible T2 hyperintense edema."
    )


def test_an_all_negative_read_says_so() -> None:
    written, _ = write_findings(split_items("no PE; no PTX"), [])
    text, cited = impression(written, [])
    assert text == "No acute abnormality stated in the notes (no pulmonary embolism is seen; no pneumothorax is seen)."
    assert cited == (1, 2)
    assert impression([], [])[0] == "No finding stated in the notes."


def test_a_normal_statement_does_not_lead_the_impression() -> None:
    written, _ = write_findings(
        split_items("NCCT head, hrs after presentation. No acute infarct, no ICH. Nl study."), []
    )
    assert [w.item.kind for w in written] == ["technique", "history", "finding", "finding", "finding"]
    assert impression(written, [DifferentialItem("Glioma", 0.9, case_ids=("MPX1",))])[0] == (
        "No acute abnormality stated in the notes (no acute infarct is seen; no intracranial hemorrhage is seen)."
    )


# (diagnosis, notes, whether the notes deny it): by name, generic qualifiers ignored, or a structure called normal.
DENIALS = [
    ("Pulmonary embolism", "no PE; RLL consolidation", True),
    ("Acute ischemic stroke", "No acute infarct, no ICH", True),
    ("Perinephric/Subcapsular Hematoma", "no perinephric hemorrhage", True),
    ("Pleural effusion", "no effusion, consolidation or PTX", True),
    ("Hypertensive intracerebral hemorrhage", "no ICH", True),
    ("Coarctation of the aorta", "No dissection, no coarctation on MRA.", True),
    ("Plantaris tendon tear", "L foot\ntendons nl", True),
    ("Liver metastases", "liver unremarkable", True),
    ("Pneumonia", "no PE; RLL consolidation", False),
    ("Jefferson fracture", "no odontoid fracture", False),
    ("Brain mass", "no mass effect", False),
    ("Brain mass", "Nl study.", False),
    ("Calcaneal stress fracture", "no calcaneal dislocation", False),
]


@pytest.mark.parametrize(("diagnosis", "notes", "denied"), DENIALS)
def test_a_diagnosis_the_notes_deny_is_recognised(diagnosis: str, notes: str, denied: bool) -> None:
    assert contradicts_negatives(diagnosis, split_items(notes)) == denied


def test_stated_findings_keep_abnormal_items_and_denials_only() -> None:
    stated = stated_findings(split_items("NCCT head\nhx VP shunt\nR frontal mass\nno MLS\nventricles nl"))
    assert [(s.text, s.status) for s in stated] == [("right frontal mass", "present"), ("no midline shift", "absent")]
