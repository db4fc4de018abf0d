"""What of a PACS instance is kept on disk: everything but the patient's identity.

Patient name, birth date and the other direct identifiers are removed before a file is written, and
the patient id is replaced by its salted hash (`retrieval.ids.hashed_patient_id`): enough for the
leakage guard to tell two studies of one patient apart from two patients, never the id itself.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from kgreport.retrieval.ids import hashed_patient_id

REMOVED = (
    "PatientName",
    "PatientBirthDate",
    "PatientBirthTime",
    "OtherPatientNames",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientMotherBirthName",
    "MilitaryRank",
    "MedicalRecordLocator",
)


def deidentify(ds: Dataset, salt: bytes) -> Dataset:
    """`ds` itself, with the identifiers in `REMOVED` deleted and PatientID hashed."""
    for keyword in REMOVED:
        if keyword in ds:
            delattr(ds, keyword)
    hashed = hashed_patient_id(str(ds.get("PatientID", "") or ""), salt)
    if hashed is None:
        if "PatientID" in ds:
            delattr(ds, "PatientID")
    else:
        ds.PatientID = hashed
    return ds
