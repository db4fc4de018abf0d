"""DICOM-folder and NIfTI-folder archives built from real files in a temporary folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from indexing.archives import detect_format, open_archive
from indexing.archives.dicom_folder import DicomFolderArchive
from indexing.archives.nifti_folder import NiftiFolderArchive
from retrieval.imaging import load_case_image
from retrieval.records import Case, SkippedItem

CT_SERIES = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "77654033" / "CT2"


def _copy_study(dest: Path, study_uid: str, series_uid: str, patient: str) -> None:
    dest.mkdir(parents=True)
    for f in sorted(CT_SERIES.iterdir()):
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = study_uid, series_uid, patient
        ds.save_as(dest / f"{f.name}.dcm")


def test_dicom_folder_archive(tmp_path: Path) -> None:
    _copy_study(tmp_path / "s1", "1.2.3.1", "1.2.3.1.1", "P1")
    _copy_study(tmp_path / "s2", "1.2.3.2", "1.2.3.2.1", "P2")
    _copy_study(tmp_path / "s3", "1.2.3.3", "1.2.3.3.1", "P3")
    _copy_study(tmp_path / "s4", "1.2.3.4", "1.2.3.4.1", "P4")
    _copy_study(tmp_path / "s4" / "second", "1.2.3.4", "1.2.3.4.2", "P4")
    odd = sorted((tmp_path / "s4" / "second").iterdir())[0]
    ds = pydicom.dcmread(odd)
    ds.Rows, ds.PixelData = 8, ds.PixelData[: 8 * 16 * 2]
    ds.save_as(odd)
    (tmp_path / "s3" / "report.txt").write_text("FINDINGS: small nodule.\nIMPRESSION: follow up.")
    (tmp_path / "notes.txt").write_text("not dicom")
    rows = [
        {"case_id": "1.2.3.1", "report": "FINDINGS: normal chest.", "body_region": "chest"},
        {"case_id": "s2", "report": "   "},
        {"case_id": "1.2.3.4", "report": "Mass."},
    ]
    (tmp_path / "reports.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert detect_format(tmp_path) == "dicom"
    archive = open_archive(tmp_path)
    assert isinstance(archive, DicomFolderArchive) and len(archive) == 4
    items = list(archive)
    cases = {c.case_id: c for c in items if isinstance(c, Case)}
    skipped = [s for s in items if isinstance(s, SkippedItem)]
    assert set(cases) == {"1.2.3.1", "1.2.3.3", "1.2.3.4"}
    assert cases["1.2.3.1"].patient_id == "P1" and cases["1.2.3.1"].body_region == "chest"
    assert cases["1.2.3.3"].report.impression == "follow up."
    assert [img.image_id for img in cases["1.2.3.4"].images] == ["1.2.3.4.1"]
    reasons = " | ".join(s.reason for s in skipped)
    assert "empty report" in reasons and "inconsistent slice sizes in series 1.2.3.4.2" in reasons
    volume = load_case_image(cases["1.2.3.1"].images[0])
    assert volume.kind == "volume" and volume.is_hu and volume.shape[1:] == (16, 16)


def test_nifti_folder_archive(tmp_path: Path) -> None:
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(
        nib.Nifti1Image(np.random.default_rng(0).normal(0, 300, (16, 16, 10)).astype(np.float32), affine),
        tmp_path / "ct001.nii.gz",
    )
    (tmp_path / "ct001.txt").write_text("Findings: liver lesion.")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), affine), tmp_path / "ct002.nii")
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 2, 2), np.float32), affine), tmp_path / "ct003.nii")
    (tmp_path / "ct003.txt").write_text("Findings: x")
    (tmp_path / "ct004.nii").write_bytes(b"not nifti")
    assert detect_format(tmp_path) == "nifti"
    archive = NiftiFolderArchive(tmp_path)
    items = {getattr(i, "case_id", None) or Path(i.source).name.split(".")[0]: i for i in archive}
    assert isinstance(items["ct001"], Case) and items["ct001"].report.findings == "liver lesion."
    assert isinstance(items["ct002"], SkippedItem) and "no report" in items["ct002"].reason
    assert isinstance(items["ct003"], SkippedItem) and "shape" in items["ct003"].reason
    assert isinstance(items["ct004"], SkippedItem) and "unreadable" in items["ct004"].reason
    assert load_case_image(items["ct001"].images[0]).shape == (10, 16, 16)
    shutil.rmtree(tmp_path)
