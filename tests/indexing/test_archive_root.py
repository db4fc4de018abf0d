"""Every archive reader stays inside its root: `..` names, absolute paths and symlinks pointing out are
skipped (with a reason and a warning); symlinks that stay inside keep working."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.filewriter import dcmwrite

from kgreport.indexing.archives import ArchiveError
from kgreport.indexing.archives.base import inside_root
from kgreport.indexing.archives.dicom_folder import DicomFolderArchive
from kgreport.indexing.archives.manifest import ManifestArchive
from kgreport.indexing.archives.medpix import MedPixArchive
from kgreport.indexing.archives.nifti_folder import NiftiFolderArchive
from kgreport.retrieval.records import Case, SkippedItem
from tests.indexing.test_dicom_folder_archive import CT_SERIES, _write_reports, _write_series

SECRET = "SECRET report text from outside the archive"


def _split(items: list[Case | SkippedItem]) -> tuple[dict[str, Case], dict[str, str]]:
    cases = {i.case_id: i for i in items if isinstance(i, Case)}
    skipped = {i.source: i.reason for i in items if isinstance(i, SkippedItem)}
    return cases, skipped


def _nifti(path: Path) -> Path:
    data = np.zeros((8, 8, 4), dtype=np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


# --- the shared helper


def test_inside_root_resolves_dots_absolute_paths_symlinks_and_loops(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.txt").write_text("a")
    (tmp_path / "out.txt").write_text("out")
    (root / "in_link").symlink_to(root / "sub" / "a.txt")
    (root / "out_link").symlink_to(tmp_path / "out.txt")
    (root / "loop").symlink_to(root / "loop")
    assert inside_root(root / "sub" / ".." / "sub" / "a.txt", root) == (root / "sub" / "a.txt").resolve()
    assert inside_root(root / "in_link", root) == (root / "sub" / "a.txt").resolve()
    assert inside_root(root / "sub" / ".." / ".." / "out.txt", root) is None
    assert inside_root(root / str(tmp_path / "out.txt"), root) is None  # joining an absolute path
    assert inside_root(root / "out_link", root) is None
    assert inside_root(root / "loop", root) is None
    # A root that is itself a symlink is resolved too.
    (tmp_path / "root_link").symlink_to(root)
    assert inside_root(tmp_path / "root_link" / "sub" / "a.txt", tmp_path / "root_link") is not None


# --- MedPix


def _medpix(root: Path, rows: list[dict[str, object]]) -> None:
    (root / "images").mkdir(parents=True)
    (root / "data_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_medpix_tac_escaping_the_root_is_not_indexed(
    tmp_path: Path, demo_archive: Path, caplog: pytest.LogCaptureFixture
) -> None:
    row = json.loads((demo_archive / "data_train.jsonl").read_text().splitlines()[0])
    real = row["TAC"][0]
    root = tmp_path / "deep" / "archive"
    escaping = dict(row, U_id="MPX-escape", TAC=["../../../x"], MRI=[])
    mixed = dict(row, U_id="MPX-mixed", TAC=[real, "../../../x", "link"], MRI=[])
    inside = dict(row, U_id="MPX-inside", TAC=["inner"], MRI=[])
    _medpix(root, [escaping, mixed, inside])
    picture = demo_archive / "images" / f"{real}.jpg"
    shutil.copy(picture, tmp_path / "x.jpg")  # a real picture outside the root: images/../../../x.jpg
    shutil.copy(picture, root / "images" / f"{real}.jpg")
    (root / "images" / "link.jpg").symlink_to(tmp_path / "x.jpg")  # a symlink pointing out
    (root / "store").mkdir()
    shutil.copy(picture, root / "store" / "kept.jpg")
    (root / "images" / "inner.jpg").symlink_to(root / "store" / "kept.jpg")  # a symlink that stays inside

    with caplog.at_level(logging.WARNING, logger="kgreport.indexing.archives"):
        items = list(MedPixArchive(root, "train"))
    cases, skipped = _split(items)
    assert "outside the archive root" in skipped["MPX-escape"] and "'../../../x'" in skipped["MPX-escape"]
    assert [i.image_id for i in cases["MPX-mixed"].images] == [real]
    assert [i.image_id for i in cases["MPX-inside"].images] == ["inner"]
    assert all(img.path.resolve().is_relative_to(root.resolve()) for c in cases.values() for img in c.images)
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    assert "MPX-mixed: dropping image" in warnings and "images/link.jpg" in warnings
    assert "skipping MPX-escape" in warnings


# --- manifests


def test_manifest_images_outside_the_root(tmp_path: Path, demo_archive: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "archive"
    (root / "img").mkdir(parents=True)
    picture = next((demo_archive / "images").glob("*.jpg"))
    shutil.copy(picture, tmp_path / "outside.png")
    shutil.copy(picture, root / "img" / "a.png")
    (root / "img" / "out_link.png").symlink_to(tmp_path / "outside.png")
    (root / "img" / "in_link.png").symlink_to(root / "img" / "a.png")
    rows = [
        {"case_id": "dots", "images": ["../outside.png"], "report": "mass"},
        {"case_id": "absolute", "images": [str(tmp_path / "outside.png")], "report": "mass"},
        {"case_id": "link", "images": ["img/out_link.png"], "report": "mass"},
        {"case_id": "mixed", "images": ["img/a.png", "../outside.png"], "captions": ["A", "B"], "report": "mass"},
        {"case_id": "inside", "images": ["img/in_link.png"], "report": "mass"},
    ]
    manifest = root / "cases.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING, logger="kgreport.indexing.archives"):
        cases, skipped = _split(list(ManifestArchive(manifest)))
    for case_id in ("dots", "absolute", "link"):
        assert "resolve outside the archive root" in skipped[case_id]
    (kept,) = cases["mixed"].images
    assert kept.path == (root / "img" / "a.png").resolve() and kept.caption == "A"
    assert cases["inside"].images[0].path == (root / "img" / "a.png").resolve()
    assert "cases.jsonl:4 (mixed): dropping image" in caplog.text


# --- DICOM folders


def test_dicom_symlinks_pointing_outside(tmp_path: Path) -> None:
    root, outside = tmp_path / "archive", tmp_path / "outside"
    (outside / "secret.txt").parent.mkdir(parents=True)
    (outside / "secret.txt").write_text(f"FINDINGS: {SECRET}")
    # s1: fine, except a symlinked .dcm of another patient's study outside the root.
    _write_series(root / "s1", "1.1", "1.1.1", patient="P1")
    foreign = _write_series(outside / "other", "9.9", "9.9.1", patient="SECRET-PATIENT")
    (root / "s1" / "evil.dcm").symlink_to(foreign[0])
    # s2: a symlinked slice outside that claims to belong to s2's own series.
    _write_series(root / "s2", "2.2", "2.2.1", patient="P2")
    intruder = pydicom.dcmread(foreign[1])
    intruder.StudyInstanceUID, intruder.SeriesInstanceUID = "2.2", "2.2.1"
    intruder.save_as(outside / "intruder.dcm")
    (root / "s2" / "0.dcm").symlink_to(outside / "intruder.dcm")
    # s3: its report.txt is a symlink to a text outside.
    _write_series(root / "s3", "3.3", "3.3.1", patient="P3")
    (root / "s3" / "report.txt").symlink_to(outside / "secret.txt")
    _write_reports(root, [{"case_id": c, "report": "FINDINGS: ok."} for c in ("1.1", "2.2", "9.9")])

    archive = DicomFolderArchive(root)
    items = list(archive)
    assert len(archive) == len(items)
    cases, skipped = _split(items)
    assert set(cases) == {"1.1"}
    assert cases["1.1"].patient_id == "P1" and [i.image_id for i in cases["1.1"].images] == ["1.1.1"]
    assert "outside the archive root" in skipped[str(root / "s1" / "evil.dcm")]
    assert "series 9.9.1" in skipped[str(root / "s1" / "evil.dcm")]
    reason = skipped[str(root / "s2" / "0.dcm")]
    assert "series 2.2.1" in reason and "the series is left out" in reason
    assert "report file" in skipped[str(root / "s3")] and "outside the archive root" in skipped[str(root / "s3")]
    served = json.dumps([(c.patient_id, c.report.text(), [str(i.metadata) for i in c.images]) for c in cases.values()])
    assert "SECRET" not in served and str(outside) not in served


def _raw_slice(source: Path, dest: Path, study: str, series: str) -> Path:
    """A DICOM slice without preamble or `.dcm` suffix: the folder scan ignores it unless linked as `.dcm`."""
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = study, series, "Doe^John"
    ds.preamble = None
    dest.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(dest, ds, enforce_file_format=False)
    return dest


def test_dicom_symlinks_inside_the_root_keep_working(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    (root / "study").mkdir(parents=True)
    for source in sorted(CT_SERIES.iterdir()):  # a blob store inside the archive, linked from the study
        blob = _raw_slice(source, root / "blobs" / source.name, "5.5", "5.5.1")
        (root / "study" / f"{source.name}.dcm").symlink_to(Path("..") / "blobs" / blob.name)
    (root / "texts").mkdir()
    (root / "texts" / "study.txt").write_text("FINDINGS: normal head.")
    (root / "study" / "report.txt").symlink_to(root / "texts" / "study.txt")

    (case,) = list(DicomFolderArchive(root))
    assert isinstance(case, Case) and case.case_id == "5.5" and case.report.findings == "normal head."
    assert len(case.images[0].metadata["dicom_files"]) == 4
    # A header patient id that breaks the id rule becomes a stable digest, not a skip.
    assert case.patient_id is not None and case.patient_id.startswith("pid-")
    assert case.patient_id == next(iter(DicomFolderArchive(root))).patient_id  # type: ignore[union-attr]


# --- NIfTI folders and sidecar reports


def test_nifti_symlinks_outside_and_inside(tmp_path: Path) -> None:
    root, outside = tmp_path / "archive", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    _nifti(outside / "elsewhere.nii.gz")
    (outside / "secret.txt").write_text(f"FINDINGS: {SECRET}")
    (root / "linked_out.nii.gz").symlink_to(outside / "elsewhere.nii.gz")
    (root / "linked_out.txt").write_text("FINDINGS: would be indexed.")
    _nifti(root / "own.nii.gz")
    (root / "own.txt").symlink_to(outside / "secret.txt")  # sidecar report pointing out
    (root / "store").mkdir()
    _nifti(root / "store" / "blob.nii.gz")
    (root / "linked_in.nii.gz").symlink_to(root / "store" / "blob.nii.gz")
    (root / "linked_in.txt").symlink_to(root / "store" / "report.txt")
    (root / "store" / "report.txt").write_text("FINDINGS: inside.")

    archive = NiftiFolderArchive(root)
    items = list(archive)
    assert len(archive) == len(items) == 4
    cases, skipped = _split(items)
    assert set(cases) == {"linked_in"} and cases["linked_in"].report.findings == "inside."
    assert "NIfTI file 'linked_out.nii.gz' resolves outside" in skipped[str(root / "linked_out.nii.gz")]
    assert "report file" in skipped["own"] and "outside the archive root" in skipped["own"]
    assert skipped[str(root / "store" / "blob.nii.gz")].startswith("no report")


@pytest.mark.parametrize("name", ["reports.jsonl", "reports.csv"])
def test_report_table_symlinked_outside_is_an_error(tmp_path: Path, name: str) -> None:
    root, outside = tmp_path / "archive", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / name).write_text('{"case_id": "x", "report": "r"}\n' if name.endswith("jsonl") else "case_id,report\n")
    (root / name).symlink_to(outside / name)
    with pytest.raises(ArchiveError, match="outside the archive root"):
        NiftiFolderArchive(root)
    with pytest.raises(ArchiveError, match="outside the archive root"):
        DicomFolderArchive(root)


def test_report_table_symlinked_inside_is_read(tmp_path: Path) -> None:
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "reports.csv").write_text("case_id,report\nvol,Findings: fine.\n")
    (tmp_path / "reports.csv").symlink_to(Path("meta") / "reports.csv")
    _nifti(tmp_path / "vol.nii")
    (case,) = list(NiftiFolderArchive(tmp_path))
    assert isinstance(case, Case) and case.report.findings == "fine."
