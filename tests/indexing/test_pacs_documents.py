"""What is read from and kept of a PACS instance: the text of an SR, and nothing that identifies the patient."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from kgreport.indexing.pacs.deidentify import REMOVED, deidentify
from kgreport.indexing.pacs.structured_report import MAX_DEPTH, MalformedReportError, report_text
from kgreport.retrieval.ids import hashed_patient_id, is_valid_id
from kgreport.testkit.pacs import make_ct_study, make_text_sr


def test_the_text_of_a_basic_text_sr_reads_as_a_report() -> None:
    sr = make_text_sr("1.2.3", "Right lower lobe consolidation.", impression="Pneumonia.")
    text = report_text(sr)
    assert "Right lower lobe consolidation." in text and "Impression: Pneumonia." in text


def _container(depth: int) -> Dataset:
    item = Dataset()
    item.ValueType = "CONTAINER"
    if depth:
        item.ContentSequence = Sequence([_container(depth - 1)])
    return item


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda sr: delattr(sr, "ContentSequence"), "no ContentSequence"),
        (lambda sr: setattr(sr, "ContentSequence", Sequence([_container(1)])), "holds no text"),
        (lambda sr: setattr(sr, "ContentSequence", Sequence([_container(MAX_DEPTH + 2)])), "deeper than"),
        (
            lambda sr: setattr(sr, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.2") or setattr(sr, "Modality", "CT"),
            "not a text",
        ),
    ],
)
def test_a_malformed_sr_is_named(change, problem: str) -> None:  # type: ignore[no-untyped-def]
    sr = make_text_sr("1.2.3", "Findings.")
    change(sr)
    with pytest.raises(MalformedReportError, match=problem):
        report_text(sr)


def test_identifiers_are_removed_and_the_patient_id_hashed() -> None:
    ds = make_ct_study(patient_id="PAT-REAL-1", slices=1)[0]
    ds.PatientName, ds.PatientBirthDate, ds.OtherPatientNames = "Doe^Jane", "19500101", "Roe^Jane"
    deidentify(ds, b"salt")
    assert not any(keyword in ds for keyword in REMOVED)
    assert ds.PatientID == hashed_patient_id("PAT-REAL-1", b"salt") and is_valid_id(ds.PatientID)
    assert hashed_patient_id("PAT-REAL-1", b"other salt") != ds.PatientID, "the salt is what protects the id"
    assert ds.pixel_array.shape == (128, 128), "the pixels are kept"


def test_a_pacs_query_checks_its_dates_and_reads_back_what_it_wrote() -> None:
    from kgreport.indexing.archives.base import ArchiveError
    from kgreport.indexing.archives.dicomweb import PacsQuery

    with pytest.raises(ArchiveError, match="YYYYMMDD"):
        PacsQuery(since="2024-01-31")
    query = PacsQuery("20240101", None, "CT", ("1.2.3",))
    assert PacsQuery.from_json(query.as_json()) == query
