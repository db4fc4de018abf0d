"""NIfTI-folder archives of volumes written here with nibabel, with sidecar and tabulated reports."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kgreport.indexing.archives import ArchiveError, detect_format, open_archive
from kgreport.indexing.archives.nifti_folder import NiftiFolderArchive
from kgreport.retrieval.ids import ID_RULE
from kgreport.retrieval.imaging import load_case_image
from kgreport.retrieval.records import Case, SkippedItem

AFFINE = np.diag([0.8, 0.8, 2.0, 1.0])


def _volume(path: Path, shape: tuple[int, ...] = (16, 16, 10)) -> Path:
    data = np.random.default_rng(0).normal(0, 300, shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return path


def test_cases_and_skipped_items(tmp_path: Path) -> None:
    _volume(tmp_path / "ct001.nii.gz")
    (tmp_path / "ct001.txt").write_text("FINDINGS: liver lesion.\nIMPRESSION: likely cyst.")
    _volume(tmp_path / "ct002.nii")  # no report anywhere
    _volume(tmp_path / "ct003.nii", (2, 2, 2, 2, 2))  # 5D: wrong-sized
    (tmp_path / "ct003.txt").write_text("Findings: x")
    (tmp_path / "ct004.nii").write_bytes(b"not nifti")
    _volume(tmp_path / "ct005.nii")
    (tmp_path / "ct005.txt").write_text("  \n")  # blank sidecar
    (tmp_path / "sub").mkdir()
    _volume(tmp_path / "sub" / "ct006.nii.gz")  # nested, reported in the table
    _volume(tmp_path / "sub" / "ct001.nii")  # same case id as a file above
    short = _volume(tmp_path / "ct007.nii")
    short.write_bytes(short.read_bytes()[:-100])  # truncated voxel data, caught from the header and size
    (tmp_path / "ct007.txt").write_text("Findings: y")
    row = {"case_id": "ct006", "report": "Liver metastases.", "patient_id": 17, "modality": "ct"}
    (tmp_path / "reports.jsonl").write_text(json.dumps(row) + "\n")

    assert detect_format(tmp_path) == "nifti"
    archive = open_archive(tmp_path)
    assert isinstance(archive, NiftiFolderArchive) and archive.name == f"nifti:{tmp_path.name}"
    items = list(archive)
    assert len(archive) == len(items) == 8
    cases = {c.case_id: c for c in items if isinstance(c, Case)}
    skipped = {Path(s.source).name: s.reason for s in items if isinstance(s, SkippedItem)}
    assert set(cases) == {"ct001", "ct006"}

    ct001 = cases["ct001"]
    assert ct001.report.findings == "liver lesion." and ct001.report.impression == "likely cyst."
    assert ct001.modality is None and ct001.patient_id is None
    (image,) = ct001.images
    assert image.image_id == "ct001" and image.path == tmp_path / "ct001.nii.gz" and image.plane == "axial"
    assert image.metadata["shape"] == (16, 16, 10)
    decoded = load_case_image(image)
    assert decoded.shape == (10, 16, 16) and decoded.spacing == pytest.approx((2.0, 0.8, 0.8))
    assert not decoded.is_hu  # modality unknown: not assumed to be CT

    ct006 = cases["ct006"]
    assert ct006.report.findings == "Liver metastases." and ct006.patient_id == "17"
    assert ct006.modality == "CT" and ct006.images[0].modality == "CT"
    assert load_case_image(ct006.images[0]).is_hu  # the table says CT

    assert skipped["ct002.nii"] == "no report for ct002.nii (no ct002.txt, no table row)"
    assert "unsupported NIfTI shape (2, 2, 2, 2, 2)" in skipped["ct003.nii"]
    assert "ct004.nii: unreadable NIfTI file" in skipped["ct004.nii"]
    assert skipped["ct005"] == "empty report"
    assert skipped["ct001.nii"].startswith("duplicate case id 'ct001'")
    assert "ct007.nii: truncated NIfTI file" in skipped["ct007.nii"]


def test_4d_volume_is_a_case(tmp_path: Path) -> None:
    _volume(tmp_path / "perfusion.nii.gz", (8, 8, 4, 3))
    (tmp_path / "reports.csv").write_text("case_id,report,body_region\nperfusion,Findings: normal.,Brain\n")
    (case,) = list(NiftiFolderArchive(tmp_path))
    assert isinstance(case, Case) and case.body_region == "brain"
    decoded = load_case_image(case.images[0])
    assert decoded.shape == (4, 8, 8) and "3 volumes: using the first" in decoded.metadata["note"]


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="NIfTI folder not found"):
        NiftiFolderArchive(tmp_path / "missing")


def test_ids_breaking_the_rule(tmp_path: Path) -> None:
    _volume(tmp_path / "two words.nii")
    (tmp_path / "two words.txt").write_text("Findings: x")
    _volume(tmp_path / "vol1.nii")
    _volume(tmp_path / "vol2.nii")
    rows = [
        {"case_id": "../vol1", "report": "Findings: a"},
        {"case_id": "a\x00b", "report": "Findings: a"},
        {"case_id": "vol1", "report": "Findings: fine.", "patient_id": "p-1"},
        {"case_id": "vol2", "report": "Findings: fine.", "patient_id": "x\n"},
    ]
    (tmp_path / "reports.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    archive = NiftiFolderArchive(tmp_path)
    items = list(archive)
    assert len(archive) == len(items) == 5
    skipped = {s.source: s.reason for s in items if isinstance(s, SkippedItem)}
    assert "case id '../vol1' (reports.jsonl:1)" in skipped["reports.jsonl:1"] and ID_RULE in skipped["reports.jsonl:1"]
    assert "case id 'a\\x00b' (reports.jsonl:2)" in skipped["reports.jsonl:2"]
    assert "case id 'two words' (from file name two words.nii)" in skipped[str(tmp_path / "two words.nii")]
    assert "patient id 'x\\n' (reports.jsonl:4)" in skipped["vol2"] and ID_RULE in skipped["vol2"]
    (case,) = [c for c in items if isinstance(c, Case)]
    assert case.case_id == "vol1" and case.patient_id == "p-1"
