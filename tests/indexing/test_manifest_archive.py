import json
import shutil
from pathlib import Path

from kgreport.indexing.archives import detect_format
from kgreport.indexing.archives.manifest import ManifestArchive
from kgreport.retrieval.ids import ID_RULE
from kgreport.retrieval.records import Case, SkippedItem


def _images(tmp_path: Path, demo_archive: Path, n: int = 2) -> list[str]:
    (tmp_path / "img").mkdir()
    names = []
    for src in sorted((demo_archive / "images").glob("*.jpg"))[:n]:
        shutil.copy(src, tmp_path / "img" / src.name)
        names.append(f"img/{src.name}")
    return names


def test_jsonl_manifest(tmp_path: Path, demo_archive: Path) -> None:
    names = _images(tmp_path, demo_archive)
    rows = [
        {
            "case_id": "c1",
            "patient_id": "p1",
            "images": names,
            "report": "FINDINGS: mass.\nIMPRESSION: tumour.",
            "modality": "CT",
            "body_region": "Thorax",
            "site": "north",
        },
        {"case_id": "c2", "images": ["../outside.jpg"], "report": "mass"},
        {"case_id": "c3", "images": names[:1], "report": "   "},
        {"case_id": "c4", "images": names[:1], "report": {"findings": "normal", "impression": "no disease"}},
    ]
    manifest = tmp_path / "cases.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    assert detect_format(manifest) == "manifest"
    items = list(ManifestArchive(manifest))
    assert len(items) == 5
    c1 = items[0]
    assert isinstance(c1, Case)
    assert c1.patient_id == "p1" and c1.report.impression == "tumour." and c1.metadata == {"site": "north"}
    assert all(img.path.is_file() for img in c1.images)
    assert isinstance(items[1], SkippedItem) and "outside the archive root" in items[1].reason
    assert isinstance(items[2], SkippedItem) and items[2].reason == "empty report"
    assert isinstance(items[3], Case) and items[3].report.impression == "no disease"
    assert isinstance(items[4], SkippedItem) and "not a JSON object" in items[4].reason


def test_csv_manifest_with_semicolon_images(tmp_path: Path, demo_archive: Path) -> None:
    names = _images(tmp_path, demo_archive)
    manifest = tmp_path / "cases.csv"
    manifest.write_text(
        f"case_id,images,report,modality\nc1,{';'.join(names)},mass in liver,CT\nc2,/etc/passwd,mass,CT\n"
    )
    items = list(ManifestArchive(manifest))
    assert isinstance(items[0], Case) and len(items[0].images) == 2 and items[0].modality == "CT"
    assert isinstance(items[1], SkippedItem)


BAD_IDS = ["a/b", "..", ".", "x\n", "a" * 129, "a\x00b", "two words", ""]


def test_ids_breaking_the_rule_skip_their_row(tmp_path: Path, demo_archive: Path) -> None:
    names = _images(tmp_path, demo_archive, 1)
    rows = [{"case_id": bad, "images": names, "report": "mass"} for bad in BAD_IDS[:-1]]
    rows.append({"case_id": "ok", "patient_id": "Doe^John", "images": names, "report": "mass"})
    rows.append({"case_id": "a" * 128, "patient_id": "p:1", "images": names, "report": "mass"})
    manifest = tmp_path / "cases.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = list(ManifestArchive(manifest))
    skipped = {i.source: i.reason for i in items if isinstance(i, SkippedItem)}
    for line_no, bad in enumerate(BAD_IDS[:-1], 1):
        reason = skipped[f"cases.jsonl:{line_no}"]
        assert f"case id {repr(bad)[:40]}" in reason and f"(cases.jsonl:{line_no})" in reason and ID_RULE in reason
    assert "patient id 'Doe^John' (cases.jsonl:8)" in skipped["cases.jsonl:8"]
    (case,) = [i for i in items if isinstance(i, Case)]
    assert case.case_id == "a" * 128 and case.patient_id == "p:1"


def test_csv_id_with_a_slash_names_its_row(tmp_path: Path, demo_archive: Path) -> None:
    names = _images(tmp_path, demo_archive, 1)
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f'case_id,images,report\nc1,{names[0]},mass\n"../c2",{names[0]},mass\n')
    first, second = list(ManifestArchive(manifest))
    assert isinstance(first, Case)
    assert isinstance(second, SkippedItem) and second.source == "cases.csv:3"
    assert "case id '../c2' (cases.csv:3)" in second.reason and ID_RULE in second.reason
