"""Image-only drafts: another patient's measurements, sides, age and dates taken out; cut sentences dropped."""

import pytest

from kgreport.generator.image_draft import clean_sentence, complete, similar_cases_impression


@pytest.mark.parametrize(
    ("sentence", "cleaned", "reason"),
    [
        (
            "There is a 3 cm mass in the liver.",
            "There is a mass in the liver.",
            "another patient's measurement taken out",
        ),
        ("There is a large left-sided mass with edema.", "There is a large mass with edema.", "another patient's side"),
        ("The ventricles are normal in size.", "The ventricles are normal in size.", None),
        ("The mass, on the left, is large.", "The mass is large.", "another patient's side"),
        (
            "It compresses the upper aspect of the right midbrain.",
            "It compresses the upper aspect of the midbrain.",
            "another",
        ),
        ("CT shows a 1.9 x 4.5cm, fat density mass.", "CT shows a fat density mass.", "another patient's measurement"),
        ("This mass measures approximately 2.9 cm.", None, "nothing left once another patient's details were taken"),
        ("There is a mass in the right frontal lobe with multiple ...", None, "cut off"),
        ("The cord signal", None, "cut off"),
        ("associated with a large right-.", None, "cut off"),
        ("A 45-year-old man with headache.", None, "states another patient's age or sex"),
    ],
)
def test_another_patients_details_never_pass(sentence: str, cleaned: str | None, reason: str | None) -> None:
    result = clean_sentence(sentence)
    assert result.sentence == cleaned
    assert (result.reason is None) if reason is None else (result.reason or "").startswith(reason)


def test_what_counts_as_a_whole_sentence() -> None:
    assert complete("The liver is normal.") and complete('He said "fine."')
    assert not complete("The liver is") and not complete("Mass with multiple ...") and not complete("Mass in the.")


def test_the_impression_lists_the_similar_cases_without_stating_a_diagnosis() -> None:
    assert similar_cases_impression([("MPX1", "Glioma"), ("MPX2", ""), ("MPX3", "A"), ("MPX4", "B")]) == (
        "Similar prior cases: Glioma (MPX1), MPX2, A (MPX3)."
    )
    assert similar_cases_impression([]) == "No similar prior case."
