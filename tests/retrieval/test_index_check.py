"""`check_index` and `repair_index` on a real small index, damaged one file at a time (issue #5)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kgreport.retrieval.index_check import IndexCheck, check_index
from kgreport.retrieval.index_repair import repair_index
from kgreport.retrieval.stores.local.store import CaseStore, IndexUnreadableError
from kgreport.retrieval.stores.local.write_lock import IndexBusyError, index_write_lock
from kgreport.retrieval.vector_index import VectorIndex
from tests.retrieval.test_case_store import DIM, TEXT_DIM, Item, create, make_cases, results

MAIN_FILES = ("manifest.json", "store.sqlite", "image.faiss", "text.faiss")
IMAGE_ENCODER = SimpleNamespace(name="test-img", dim=DIM)
TEXT_ENCODER = SimpleNamespace(name="test-txt", dim=TEXT_DIM)


@pytest.fixture
def index(tmp_path: Path) -> tuple[Path, list[Item], tuple[list, list]]:
    """A flushed index of 9 cases (c1 deleted: 18 image and 9 report vectors), its items, and its search results."""
    items = make_cases(10)
    root = tmp_path / "demo"
    with create(root) as store:
        store.add_cases(items)
        store.delete_case("c1")
        store.flush()
        expected = results(store, items)
    return root, items, expected


def contents(root: Path) -> dict[str, bytes | None]:
    """The bytes of the index's own files (SQLite's -wal/-shm side files aside), None where missing."""
    return {name: (root / name).read_bytes() if (root / name).is_file() else None for name in MAIN_FILES}


def checked(root: Path) -> IndexCheck:
    """`check_index`, asserting it changed none of the files."""
    before = contents(root)
    check = check_index(root)
    assert contents(root) == before
    return check


def search_results(root: Path, items: list[Item]) -> tuple[list, list]:
    with CaseStore.open(root) as store:
        return results(store, items)


def test_a_sound_index_passes_with_its_counts(index) -> None:
    root, _, _ = index
    check = checked(root)
    assert check.ok and check.problems == [] and check.damaged == set()
    facts = check.facts
    assert (facts["cases"], facts["images"], facts["image_vectors"], facts["text_vectors"]) == (9, 18, 18, 9)
    assert (facts["generation"], facts["flushed_generation"], facts["format_version"]) == (2, 2, 1)
    assert (facts["image_dim"], facts["text_dim"], facts["image_index"]) == (DIM, TEXT_DIM, "flat")
    assert check.as_json()["ok"] is True


def test_writes_not_yet_flushed_are_a_note_not_a_problem(index) -> None:
    root, items, _ = index
    store = CaseStore.open(root)
    store.add_cases(make_cases(2, seed=5, start=20))
    store.delete_case("c4")
    store.image_index.save(root / "image.faiss")  # one file saved, then stopped before the other and the manifest
    store.close()  # the store applies what is missing from SQLite when it opens
    check = checked(root)
    assert check.ok, check.problems
    assert check.facts["unsaved_writes"] == 2 and check.facts["cases"] == 10
    assert any("2 writes not yet saved" in note for note in check.notes)


def test_a_new_index_never_flushed_passes(tmp_path: Path) -> None:
    create(tmp_path / "new").close()
    check = checked(tmp_path / "new")
    assert check.ok and check.facts["cases"] == 0
    assert any(note.startswith("image.faiss: not saved yet") for note in check.notes)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (b"", "the file is empty"),
        (b"\x00garbage, not a database" * 500, "no SQLite header"),
    ],
)
def test_an_empty_or_foreign_database_is_lost_and_repair_changes_nothing(index, damage: bytes, reason: str) -> None:
    root, _, _ = index
    (root / "store.sqlite").write_bytes(damage)
    check = checked(root)
    assert not check.ok and check.damaged == {"store.sqlite"}
    [problem] = check.problems
    assert problem.startswith("store.sqlite: not a readable SQLite database (") and reason in problem
    assert (check.facts["image_vectors"], check.facts["text_vectors"]) == (18, 9)  # FAISS still has the vectors
    with pytest.raises(IndexUnreadableError, match="store.sqlite: not a readable SQLite database"):
        CaseStore.open(root)
    before = contents(root)
    repair = repair_index(root)
    assert contents(root) == before and not (root / "manifest.json.broken").exists()  # nothing touched
    assert not repair.ok and repair.actions == []
    [lost] = repair.unrecoverable
    assert "cannot be recovered from the FAISS files: they hold vectors only (18 image and 9 text vectors)" in lost
    assert "Nothing was changed" in lost and "build it again from its archive" in lost


def test_a_corrupt_database_fails_its_integrity_check(index) -> None:
    root, _, _ = index
    data = bytearray((root / "store.sqlite").read_bytes())
    assert len(data) > 4 * 4096
    data[4096 : len(data) - 1024] = np.random.default_rng(0).bytes(len(data) - 5120)  # header page kept
    (root / "store.sqlite").write_bytes(bytes(data))
    check = checked(root)
    assert not check.ok and check.damaged == {"store.sqlite"}
    before = contents(root)
    repair = repair_index(root)
    assert contents(root) == before and repair.actions == []
    assert repair.unrecoverable[0].startswith("store.sqlite: cannot be repaired")


def test_an_emptied_database_is_named(index) -> None:
    root, _, _ = index
    (root / "store.sqlite").unlink()
    create(root / "other").close()  # a valid, empty database in place of the one the FAISS files came from
    shutil.copyfile(root / "other" / "store.sqlite", root / "store.sqlite")
    check = checked(root)
    assert check.damaged == {"store.sqlite"}
    assert "holds no cases, but the FAISS files were saved from it at generation 2" in check.problems[0]
    assert repair_index(root).actions == []


@pytest.mark.parametrize("name", ["image.faiss", "text.faiss"])
def test_a_missing_faiss_file_is_rebuilt(index, name: str) -> None:
    root, items, expected = index
    (root / name).unlink()
    check = checked(root)
    assert check.problems == [f"{name}: missing"] and check.damaged == {name}
    repair = repair_index(root)
    assert repair.ok and repair.unrecoverable == [] and repair.after.problems == []
    assert "rebuilt from store.sqlite (18 image and 9 report vectors) and saved at generation 2" in repair.actions[0]
    assert (root / name).is_file() and search_results(root, items) == expected


def test_a_faiss_file_of_another_index_is_found_and_replaced(index, tmp_path: Path) -> None:
    root, items, expected = index
    with create(tmp_path / "smaller") as other:  # fewer vectors: 5 images, 3 cases
        other.add_cases(make_cases(3, seed=1))
        other.delete_case("c0")
        other.add_cases([(make_cases(1, seed=2, start=7)[0][0], {"c7/img0": np.ones(DIM)}, np.ones(TEXT_DIM))])
        other.flush()
    shutil.copyfile(tmp_path / "smaller" / "image.faiss", root / "image.faiss")
    shutil.copyfile(tmp_path / "smaller" / "text.faiss", root / "text.faiss")
    check = checked(root)
    assert check.damaged == {"image.faiss", "text.faiss"}
    assert "image.faiss: holds 5 vectors, store.sqlite 18 images rows (2 not in store.sqlite, 15 missing)" in (
        check.problems
    )
    assert any(p.startswith("text.faiss: holds 3 vectors, store.sqlite 9 cases rows") for p in check.problems)
    repair = repair_index(root)
    assert repair.ok and repair.before is not repair.after
    assert search_results(root, items) == expected


def test_a_faiss_file_of_another_index_of_the_same_size_is_found_by_its_vectors(index, tmp_path: Path) -> None:
    root, items, expected = index
    with create(tmp_path / "twin") as twin:  # the same row ids, other vectors
        twin.add_cases(make_cases(10, seed=9))
        twin.delete_case("c1")
        twin.flush()
    shutil.copyfile(tmp_path / "twin" / "image.faiss", root / "image.faiss")
    check = checked(root)
    assert check.problems == ["image.faiss: 18 of 18 sampled vectors differ from store.sqlite's for the same ids"]
    assert repair_index(root).ok and search_results(root, items) == expected


def test_a_garbage_or_wrong_sized_faiss_file(index) -> None:
    root, items, expected = index
    (root / "image.faiss").write_bytes(b"not faiss at all" * 10)
    VectorIndex(32).save(root / "text.faiss")
    check = checked(root)
    assert check.damaged == {"image.faiss", "text.faiss"}
    assert check.problems[0].startswith("image.faiss: not a readable FAISS index")
    assert check.problems[1] == "text.faiss: 32-d vectors, the index's are 8-d"
    assert str(root) not in " ".join(check.problems)  # file names, not paths
    assert repair_index(root).ok and search_results(root, items) == expected


def test_a_garbage_manifest_is_rewritten_only_with_the_encoders_named(index) -> None:
    root, items, expected = index
    (root / "manifest.json").write_bytes(b"\x00\x01 garbage")
    check = checked(root)
    assert check.damaged == {"manifest.json"} and check.problems[0].startswith("manifest.json: not readable JSON")
    assert check.facts["cases"] == 9 and check.facts["image_vectors"] == 18  # the rest is still checked

    before = contents(root)
    repair = repair_index(root)  # the encoder names are written nowhere else: not guessed
    assert contents(root) == before and repair.actions == [] and not repair.ok
    assert "the image encoder and the text encoder cannot be derived" in repair.unrecoverable[0]

    wrong = SimpleNamespace(name="big", dim=512)
    repair = repair_index(root, image_encoder=wrong, text_encoder=TEXT_ENCODER)
    assert contents(root) == before and "makes 512-d vectors, the index's are 16-d" in repair.unrecoverable[0]

    repair = repair_index(root, image_encoder=IMAGE_ENCODER, text_encoder=TEXT_ENCODER)
    assert repair.ok and repair.unrecoverable == [], repair.unrecoverable
    assert "manifest.json: rewritten with 16-d image and 8-d text vectors" in repair.actions[0]
    assert (root / "manifest.json.broken").read_bytes() == b"\x00\x01 garbage"
    manifest = json.loads((root / "manifest.json").read_text())
    assert (manifest["image_encoder"], manifest["text_encoder"], manifest["faiss_generation"]) == (
        "test-img",
        "test-txt",
        2,
    )
    assert search_results(root, items) == expected


def test_a_manifest_missing_a_dimension_is_completed_from_the_stored_vectors(index) -> None:
    root, items, expected = index
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["image_dim"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert checked(root).problems == ["manifest.json: no image_dim"]
    repair = repair_index(root)
    assert repair.ok and "encoders 'test-img'/'test-txt' (from the old file)" in repair.actions[0]
    assert json.loads((root / "manifest.json").read_text())["image_dim"] == DIM
    assert search_results(root, items) == expected


def test_a_manifest_of_other_dimensions_than_the_vectors_is_not_rewritten(index) -> None:
    root, _, _ = index
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps(manifest | {"text_dim": 4}))
    check = checked(root)
    assert "manifest.json: text_dim 4, but store.sqlite holds 8-d vectors" in check.problems
    before = contents(root)
    repair = repair_index(root)
    assert contents(root) == before and "its dimensions differ from the stored vectors'" in repair.unrecoverable[0]


def test_repair_waits_for_no_writer(index) -> None:
    root, _, _ = index
    (root / "text.faiss").unlink()
    with index_write_lock(root, "demo"), pytest.raises(IndexBusyError, match="being written"):
        repair_index(root)
    assert not (root / "text.faiss").exists()
