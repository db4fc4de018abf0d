"""DICOM-folder archives built in a temporary folder from pydicom's real CT and CR test series."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest

from kgreport.indexing.archives import ArchiveError, detect_format, open_archive
from kgreport.indexing.archives.dicom_folder import DicomFolderArchive
from kgreport.retrieval.ids import ID_RULE, header_patient_id
from kgreport.retrieval.imaging import load_case_image
from kgreport.retrieval.records import Case, SkippedItem

STUDY = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "77654033"
CT_SERIES = STUDY / "CT2"  # 4 axial 16x16 CT slices of the head
CR_FILMS = [STUDY / "CR1" / "6154", STUDY / "CR2" / "6247"]


def _write_series(
    dest: Path, study_uid: str, series_uid: str, *, patient: str = "P", accession: str = "", sources=None
) -> list[Path]:
    """Copies of real slices with the study/series identity rewritten, as `<name>.dcm` in `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources or sorted(CT_SERIES.iterdir()):
        ds = pydicom.dcmread(source)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = study_uid, series_uid, patient
        ds.AccessionNumber = accession
        ds.save_as(dest / f"{source.name}.dcm")
        written.append(dest / f"{source.name}.dcm")
    return written


def _write_reports(root: Path, rows: list[dict[str, str]]) -> None:
    (root / "reports.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def archive_root(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    _write_series(root / "s1", "1.2.3.1", "1.2.3.1.1", patient="P1")  # report keyed by StudyInstanceUID
    _write_series(root / "s2", "1.2.3.2", "1.2.3.2.1")  # keyed by folder name, but the report is blank
    _write_series(root / "s3", "1.2.3.3", "1.2.3.3.1", patient="P3")  # report.txt in the folder
    (root / "s3" / "report.txt").write_text("HISTORY: headache.\nFINDINGS: small bleed.\nIMPRESSION: follow up.")
    _write_series(root / "s4" / "a", "1.2.3.4", "1.2.3.4.1", accession="ACC4")  # keyed by AccessionNumber
    odd = _write_series(root / "s4" / "b", "1.2.3.4", "1.2.3.4.2", accession="ACC4")[1]
    ds = pydicom.dcmread(odd)  # one slice of the second series is half as tall
    ds.Rows, ds.PixelData = 8, ds.PixelData[: 8 * 16 * 2]
    ds.save_as(odd)
    _write_series(root / "s5", "1.2.3.5", "1.2.3.5.1")  # no report anywhere
    broken = _write_series(root / "s6", "1.2.3.6", "1.2.3.6.1")[0]  # its only series has a truncated file
    broken.write_bytes(broken.read_bytes()[:100])
    _write_series(root / "s7", "1.2.3.7", "1.2.3.7.1", sources=CR_FILMS)  # two CR films, one series
    sr = _write_series(root / "s1" / "sr", "1.2.3.1", "1.2.3.1.9", sources=[CR_FILMS[0]])[0]
    ds = pydicom.dcmread(sr)
    ds.Modality = "SR"  # a structured report stored beside the images
    ds.save_as(sr)
    (root / "notes.txt").write_text("not DICOM: ignored")
    _write_reports(
        root,
        [
            {"case_id": "1.2.3.1", "report": "FINDINGS: normal head.", "body_region": "Brain"},
            {"case_id": "s2", "report": "   "},
            {"case_id": "ACC4", "report": "Mass in the left frontal lobe.", "patient_id": "P4"},
            {"case_id": "1.2.3.6", "report": "FINDINGS: x"},
            {"case_id": "1.2.3.7", "report": "FINDINGS: normal spine films.", "modality": "CR"},
        ],
    )
    return root


def test_cases_and_skipped_items(archive_root: Path) -> None:
    assert detect_format(archive_root) == "dicom"
    archive = open_archive(archive_root)
    assert isinstance(archive, DicomFolderArchive) and archive.name == "dicom:archive"
    items = list(archive)
    assert len(archive) == len(items) == 10
    cases = {c.case_id: c for c in items if isinstance(c, Case)}
    skipped = {s.source: s.reason for s in items if isinstance(s, SkippedItem)}
    assert set(cases) == {"1.2.3.1", "1.2.3.3", "ACC4", "1.2.3.7"}

    s1 = cases["1.2.3.1"]
    assert s1.patient_id == "P1" and s1.modality == "CT" and s1.body_region == "brain"
    assert s1.report.findings == "normal head." and s1.metadata["study_uid"] == "1.2.3.1"
    (image,) = s1.images
    assert image.image_id == "1.2.3.1.1" and image.path == archive_root / "s1"
    assert image.modality == "CT" and image.body_region == "head" and image.plane == "axial"
    assert [Path(f).name for f in image.metadata["dicom_files"]] == [
        f"{n}.dcm" for n in sorted(p.name for p in CT_SERIES.iterdir())
    ]
    assert "holds no images (Modality SR)" in skipped["1.2.3.1/1.2.3.1.9"]

    s3 = cases["1.2.3.3"]
    assert s3.report.history == "headache." and s3.report.impression == "follow up."
    assert s3.patient_id == "P3" and s3.body_region == "head"  # BodyPartExamined HEAD, lower-cased

    s4 = cases["ACC4"]
    assert [i.image_id for i in s4.images] == ["1.2.3.4.1"] and s4.patient_id == "P4"
    reason = skipped["ACC4/1.2.3.4.2"]
    assert reason.startswith("inconsistent slice sizes in series 1.2.3.4.2:") and "17136.dcm" in reason
    assert "Rows/Columns (0028,0010)/(0028,0011) 8x16" in reason

    films = cases["1.2.3.7"]  # projection films: one case image per file, whatever their sizes
    assert [i.path.name for i in films.images] == ["6154.dcm", "6247.dcm"] and films.modality == "CR"
    assert load_case_image(films.images[0]).kind == "image"

    assert skipped["s2"] == "empty report"
    assert skipped[str(archive_root / "s5")] == "no report for study 1.2.3.5"
    assert skipped["1.2.3.6/1.2.3.6.1"].startswith("unreadable file in series 1.2.3.6.1:")
    assert "17106.dcm: not a DICOM file" in skipped["1.2.3.6/1.2.3.6.1"]
    assert skipped["1.2.3.6"] == "no usable image series in study 1.2.3.6"

    volume = load_case_image(s1.images[0])
    assert volume.kind == "volume" and volume.is_hu and volume.shape == (4, 16, 16)


def test_csv_reports_keyed_by_folder_name(tmp_path: Path) -> None:
    _write_series(tmp_path / "case-a" / "series", "9.1", "9.1.1", patient="from-header")
    (tmp_path / "reports.csv").write_text(
        "\ufeffcase_id , report,patient_id\ncase-a,IMPRESSION: fine.,from-table\n", encoding="utf-8"
    )
    (case,) = list(DicomFolderArchive(tmp_path))
    assert isinstance(case, Case) and case.case_id == "case-a"
    assert case.report.impression == "fine." and case.patient_id == "from-table"


def test_real_folder_with_two_studies_sharing_an_accession_number(tmp_path: Path) -> None:
    # pydicom's 77654033 folder holds a CR study (3 one-film series) and a CT study, both AccessionNumber 2.
    shutil.copytree(STUDY, tmp_path / "77654033")
    _write_reports(tmp_path, [{"case_id": "2", "report": "FINDINGS: see images."}])
    items = list(DicomFolderArchive(tmp_path))
    assert len(items) == 2
    case, duplicate = items
    assert isinstance(case, Case) and case.case_id == "2" and case.modality == "CR" and len(case.images) == 3
    assert isinstance(duplicate, SkippedItem) and "report key '2' also matches study" in duplicate.reason


def test_archive_errors(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="DICOM folder not found"):
        DicomFolderArchive(tmp_path / "missing")
    (tmp_path / "reports.jsonl").write_text('{"case_id": "a", "report": "x"}\nnot json\n')
    with pytest.raises(ArchiveError, match=r"reports.jsonl:2: not JSON"):
        DicomFolderArchive(tmp_path)


def test_ids_breaking_the_rule(tmp_path: Path) -> None:
    _write_series(tmp_path / "s1", "1.1", "1.1.1", patient="Doe^John")  # header id: kept as a digest
    _write_series(tmp_path / "s2", "2.2", "2.2.1")  # its table row has a patient id breaking the rule
    for path in _write_series(tmp_path / "two words", "3.3", "3.3.1"):  # no study uid: the folder names the case
        ds = pydicom.dcmread(path)
        del ds.StudyInstanceUID
        ds.save_as(path)
    (tmp_path / "two words" / "report.txt").write_text("FINDINGS: x")
    _write_reports(
        tmp_path,
        [
            {"case_id": "1.1", "report": "FINDINGS: a."},
            {"case_id": "2.2", "report": "FINDINGS: b.", "patient_id": "a/b"},
            {"case_id": "..", "report": "FINDINGS: c."},
            {"case_id": "c" * 129, "report": "FINDINGS: d."},
        ],
    )
    archive = DicomFolderArchive(tmp_path)
    items = list(archive)
    assert len(archive) == len(items) == 5
    cases = {c.case_id: c for c in items if isinstance(c, Case)}
    skipped = {s.source: s.reason for s in items if isinstance(s, SkippedItem)}
    assert set(cases) == {"1.1"}
    patient = cases["1.1"].patient_id
    assert patient is not None and patient.startswith("pid-") and patient == header_patient_id("Doe^John")
    assert "patient id 'a/b' (reports.jsonl:2)" in skipped["2.2"] and ID_RULE in skipped["2.2"]
    assert "case id '..' (reports.jsonl:3)" in skipped["reports.jsonl:3"]
    assert "(reports.jsonl:4)" in skipped["reports.jsonl:4"]
    assert "case id 'two words' (study folder two words)" in skipped[str(tmp_path / "two words")]
