import json
from pathlib import Path

import pytest

from kgreport.indexing.archives import ArchiveError, detect_format, open_archive
from kgreport.indexing.archives.medpix import MedPixArchive
from kgreport.retrieval.ids import ID_RULE
from kgreport.retrieval.records import Case, SkippedItem


def test_reads_cases_with_image_captions_and_regions(medpix_root: Path) -> None:
    archive = MedPixArchive(medpix_root, "train", limit=20)
    items = list(archive)
    assert len(items) == len(archive) == 20
    cases = [c for c in items if isinstance(c, Case)]
    assert cases, "expected real cases"
    for case in cases:
        assert case.patient_id is None
        assert case.modality in {"CT", "MR"}
        assert case.body_region in {"Head", "Thorax", "Abdomen", "Spine and Muscles", "Reproductive and Urinary System"}
        for image in case.images:
            assert image.path.is_file()
            assert image.modality in {"CT", "MR"}
        assert case.report.findings or any(i.caption for i in case.images)


def test_detects_medpix_layout(demo_archive: Path) -> None:
    assert detect_format(demo_archive) == "medpix"
    assert isinstance(open_archive(demo_archive, split="train"), MedPixArchive)


def test_missing_images_and_empty_reports_are_skipped(tmp_path: Path, demo_archive: Path) -> None:
    rows = [json.loads(line) for line in (demo_archive / "data_train.jsonl").read_text().splitlines()][:2]
    rows[0]["TAC"], rows[0]["MRI"] = ["MPX_missing_image"], []
    (tmp_path / "images").mkdir()
    for row in rows[1:]:
        for name in row["TAC"] + row["MRI"]:
            (tmp_path / "images" / f"{name}.jpg").write_bytes((demo_archive / "images" / f"{name}.jpg").read_bytes())
    rows[1]["Case"]["Findings"] = ""
    (tmp_path / "data_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = list(MedPixArchive(tmp_path, "train"))
    assert isinstance(items[0], SkippedItem) and "images found" in items[0].reason
    assert isinstance(items[1], SkippedItem) and "empty report" in items[1].reason


def test_unknown_split_and_missing_folder_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="unknown MedPix split"):
        MedPixArchive(tmp_path, "validation")
    with pytest.raises(ArchiveError, match="data_train.jsonl: not found"):
        MedPixArchive(tmp_path, "train")


@pytest.mark.parametrize("bad", ["a/b", "..", "x\n", "a" * 129, "a\x00b"])
def test_u_id_breaking_the_id_rule_names_its_line(tmp_path: Path, demo_archive: Path, bad: str) -> None:
    rows = [json.loads(line) for line in (demo_archive / "data_train.jsonl").read_text().splitlines()][:2]
    rows[1]["U_id"] = bad
    (tmp_path / "images").mkdir()
    for row in rows:
        for name in row["TAC"] + row["MRI"]:
            (tmp_path / "images" / f"{name}.jpg").write_bytes((demo_archive / "images" / f"{name}.jpg").read_bytes())
    (tmp_path / "data_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "[1]\n")
    first, second, third = list(MedPixArchive(tmp_path, "train"))
    assert isinstance(first, Case)
    assert isinstance(second, SkippedItem) and second.source == "data_train.jsonl:2"
    assert f"case id {repr(bad)[:40]}" in second.reason and "(U_id of data_train.jsonl:2)" in second.reason
    assert ID_RULE in second.reason
    assert isinstance(third, SkippedItem) and third.source == "data_train.jsonl:3"
    assert "not a JSON object" in third.reason
