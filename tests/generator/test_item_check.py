"""Each notes item checked against the sentence that writes it out, and written out plainly when none passes."""

import pytest

from kgreport.generator.item_check import check_sentence, write_item
from kgreport.knowledge.extraction.notes_items import split_items


def _item(notes: str, modality: str | None = None):  # type: ignore[no-untyped-def]
    [item] = split_items(notes, modality)
    return item


MASS = "R frontal mass 3.2 x 2.8cm"


def test_a_faithful_sentence_passes() -> None:
    assert check_sentence("There is a right frontal mass measuring 3.2 x 2.8 cm.", _item(MASS)).ok


@pytest.mark.parametrize(
    ("sentence", "reason"),
    [
        ("There is a left frontal mass measuring 3.2 x 2.8 cm.", "side left where the notes say right"),
        ("There is a right frontal mass measuring 3.2 cm.", "drops 3.2 x 2.8 cm"),
        ("No right frontal mass measuring 3.2 x 2.8 cm is seen.", "states it absent where the notes say present"),
        ("There is a right frontal mass measuring 3.2 x 2.8 cm in the lateral ventricle.", "adds 'lateral ventricle'"),
        ("There is a right frontal mass.", "drops 3.2 x 2.8 cm"),
        ("There is a right frontal mass measuring 3.2 x 2.8 cm with", "cut off"),
        ("Right frontal mass 3.2 x 2.8 cm • right frontal mass 3.2 x 2.8 cm.", "repeats itself"),
    ],
)
def test_a_sentence_that_changes_the_item_fails_and_says_why(sentence: str, reason: str) -> None:
    check = check_sentence(sentence, _item(MASS))
    assert not check.ok and reason in check.reasons


def test_levels_and_expanded_shorthand() -> None:
    fracture = _item("T12 compression fx")
    assert (
        "level T11 where the notes say T12" in check_sentence("There is a T11 compression fracture.", fracture).reasons
    )
    assert check_sentence("There is a T12 compression fracture.", fracture).ok
    duct = split_items("cystic foci in panc, PD not dilated")[1]
    assert check_sentence("The pancreatic duct is not dilated.", duct).ok


@pytest.mark.parametrize(
    ("notes", "written"),
    [
        ("LV dilated", "The left ventricle is dilated."),
        ("coronaries normal", "The coronaries are normal."),
        ("nodules bilateral", "There are nodules bilaterally."),
        ("nodule 4mm", "There is a nodule measuring 4 mm."),
        ("no nodules", "No nodules are seen."),
        ("cord not expanded", "The cord is not expanded."),
        ("possible abscess", "There is possible abscess."),
        ("hx VP shunt", "History of VP shunt."),
        ("L4-5 disc herniation", "There is an L4-5 disc herniation."),
        ("multiple liver lesions, largest 3 cm", "There are multiple liver lesions, the largest measuring 3 cm."),
        ("dens intact", "The dens is intact."),
        ("mediastinum otherwise unremarkable", "The mediastinum is otherwise unremarkable."),
        ("minimally displaced fx", "There is a minimally displaced fracture."),
        (
            "multiple b/l renal masses, many w/ macroscopic fat",
            "There are multiple bilateral renal masses, many with macroscopic fat.",
        ),
    ],
)
def test_an_item_written_out_is_a_sentence_that_passes_its_own_check(notes: str, written: str) -> None:
    item = _item(notes)
    assert write_item(item) == written
    assert check_sentence(written, item).ok
