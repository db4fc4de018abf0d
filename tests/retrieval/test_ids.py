"""The one id rule for case, patient and index ids."""

from __future__ import annotations

import pytest

from kgreport.retrieval.ids import InvalidIdError, check_id, header_patient_id, is_valid_id
from kgreport.retrieval.records import Case, ReportSections

GOOD = ["MPX1075", "case-1", "a.b", "1.2.840.10008.5.1", "study:42", "x" * 128, "..."]
BAD = ["", ".", "..", "a/b", "x\n", "nul\x00B", "with space", "x" * 129, "ü", "a\\b", None, 7]


@pytest.mark.parametrize("value", GOOD)
def test_ids_that_follow_the_rule(value: str) -> None:
    assert is_valid_id(value) and check_id(value) == value


@pytest.mark.parametrize("value", BAD)
def test_ids_that_break_it_are_named_in_the_error(value: object) -> None:
    assert not is_valid_id(value)
    with pytest.raises(InvalidIdError, match="invalid index name .*row 3"):
        check_id(value, "index name", "row 3")


def test_a_trailing_newline_never_passes() -> None:
    assert not is_valid_id("x\n") and not is_valid_id("x\r\n")


def test_every_case_is_checked_where_it_is_made() -> None:
    with pytest.raises(InvalidIdError, match="case id"):
        Case("a/b", (), ReportSections(findings="Effusion."))
    with pytest.raises(InvalidIdError, match="patient id .*case C1"):
        Case("C1", (), ReportSections(findings="Effusion."), patient_id="Doe^John")


def test_header_patient_ids_keep_their_identity() -> None:
    assert header_patient_id("P-17") == "P-17"
    digest = header_patient_id(" Doe^John ")
    assert digest is not None and is_valid_id(digest) and digest.startswith("pid-")
    assert header_patient_id("Doe^John") == digest != header_patient_id("Doe^Jane")
    assert header_patient_id("  ") is None and header_patient_id(None) is None
