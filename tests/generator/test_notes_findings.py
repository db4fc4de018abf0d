"""Notes mode's Findings (the refiner's checked sentences, else each item written out) and its Impression."""

from generator.differential import DifferentialItem
from generator.notes_findings import contradicts_negatives, impression, stated_findings, write_findings
from knowledge.extraction.notes_items import split_items

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


def test_a_diagnosis_the_notes_deny_is_recognised() -> None:
    assert contradicts_negatives("Pulmonary embolism", split_items("no PE; RLL consolidation"))
    assert contradicts_negatives("Acute ischemic stroke", split_items("No acute infarct, no ICH"))
    assert contradicts_negatives("Perinephric/Subcapsular Hematoma", split_items("no perinephric hemorrhage"))
    assert contradicts_negatives("Pleural effusion", split_items("no effusion, consolidation or PTX"))
    assert not contradicts_negatives("Pneumonia", split_items("no PE; RLL consolidation"))
    assert not contradicts_negatives("Jefferson fracture", split_items("no odontoid fracture"))
    assert not contradicts_negatives("Brain mass", split_items("no mass effect"))


def test_a_denial_with_generic_qualifiers_or_a_normal_structure_contradicts_a_diagnosis() -> None:
    assert contradicts_negatives("Hypertensive intracerebral hemorrhage", split_items("no ICH"))
    assert contradicts_negatives("Coarctation of the aorta", split_items("No dissection, no coarctation on MRA."))
    assert contradicts_negatives("Plantaris tendon tear", split_items("L foot\ntendons nl"))
    assert contradicts_negatives("Liver metastases", split_items("liver unremarkable"))
    assert not contradicts_negatives("Brain mass", split_items("Nl study."))
    assert not contradicts_negatives("Calcaneal stress fracture", split_items("no calcaneal dislocation"))


def test_stated_findings_keep_abnormal_items_and_denials_only() -> None:
    stated = stated_findings(split_items("NCCT head\nhx VP shunt\nR frontal mass\nno MLS\nventricles nl"))
    assert [(s.text, s.status) for s in stated] == [("right frontal mass", "present"), ("no midline shift", "absent")]
