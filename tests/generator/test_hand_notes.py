"""Hand-written notes files: rows with a target become refiner targets, evaluation rows are skipped, bad rows named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kgreport.generator.hand_notes import HandNotesError, read_hand_notes

REPO = Path(__file__).resolve().parents[2]


def test_rows_with_a_target_are_read_and_others_skipped(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    rows = [
        {"case_id": "MPX1", "image": "MPX1_a", "notes": "RUL nodule 2cm; no eff",
         "target_findings": " There is a right upper lobe nodule measuring 2 cm. No effusion. ",
         "target_impression": "Right upper lobe nodule."},
        {"case_id": "MPX2", "image": "MPX2_a", "notes": "no hydro", "facts": []},  # evaluation row: no target
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    read = read_hand_notes(path)
    assert list(read) == ["MPX1"]
    assert read["MPX1"].target == (
        "Findings: There is a right upper lobe nodule measuring 2 cm. No effusion.\n"
        "Impression: Right upper lobe nodule."
    )
    assert read["MPX1"].image == "MPX1_a" and read["MPX1"].notes.startswith("RUL")


@pytest.mark.parametrize("line", ["{not json", json.dumps({"case_id": "MPX1", "target_findings": "x"})])
def test_a_bad_row_is_named_with_its_file_and_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text(json.dumps({"case_id": "MPX0", "image": "a", "notes": "n"}) + "\n" + line + "\n")
    with pytest.raises(HandNotesError, match=r"notes\.jsonl: line 2"):
        read_hand_notes(path)


def test_the_bundled_dev_notes_are_evaluation_rows_with_facts() -> None:
    rows = [json.loads(x) for x in (REPO / "data" / "notes" / "dev.jsonl").read_text().splitlines() if x.strip()]
    assert len(rows) >= 60 and len({r["case_id"] for r in rows}) == len(rows)
    for row in rows:
        assert row["split"] == "dev" and row["notes"].strip() and row["diagnosis_names"]
        assert row["facts"] and all(f["status"] in {"present", "absent", "uncertain"} for f in row["facts"])
    assert read_hand_notes(REPO / "data" / "notes" / "dev.jsonl") == {}  # no targets: never trained on


def test_the_bundled_train_notes_are_refiner_targets_of_train_cases_only() -> None:
    train = read_hand_notes(REPO / "data" / "notes" / "train.jsonl")
    dev = {json.loads(x)["case_id"] for x in (REPO / "data" / "notes" / "dev.jsonl").read_text().splitlines() if x}
    assert len(train) >= 150 and not set(train) & dev
    for notes in train.values():
        assert notes.image.startswith(notes.case_id) and notes.notes.strip()
        assert notes.target.startswith("Findings: ") and "\nImpression: " in notes.target
