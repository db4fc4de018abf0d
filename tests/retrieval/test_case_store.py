"""Real SQLite + FAISS: add, search with filters and exclusions, delete, persist, crash recovery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.case_store import CaseStore, DuplicateCaseError, IndexNotFoundError
from retrieval.records import Case, CaseImage, ReportSections

DIM, TEXT_DIM = 16, 8


def unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def make_cases(n: int, seed: int = 0) -> list[tuple[Case, dict[str, np.ndarray], np.ndarray]]:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        modality = "CT" if i % 2 == 0 else "MR"
        images = tuple(
            CaseImage(
                image_id=f"c{i}/img{j}",
                path=Path(f"/archive/c{i}_{j}.jpg"),
                caption=f"image {j}",
                modality=modality,
                body_region="Head" if i % 3 == 0 else "Thorax",
            )
            for j in range(2)
        )
        case = Case(
            case_id=f"c{i}",
            images=images,
            report=ReportSections(findings=f"finding number {i}"),
            patient_id=f"p{i // 2}",
            modality=modality,
            metadata={"site": "north" if i < n // 2 else "south"},
        )
        items.append((case, {img.image_id: unit(rng, DIM) for img in images}, unit(rng, TEXT_DIM)))
    return items


def create(root: Path) -> CaseStore:
    return CaseStore.create(root, image_dim=DIM, text_dim=TEXT_DIM, image_encoder="test-img", text_encoder="test-txt")


def test_add_search_get_delete(tmp_path: Path) -> None:
    items = make_cases(10)
    with create(tmp_path / "s") as store:
        store.add_cases(items)
        assert store.info()["cases"] == 10 and store.info()["images"] == 20
        query = items[3][1]["c3/img1"]
        hit = store.search_images(query[None, :], 1)[0][0]
        assert (hit.case_id, hit.image_id, hit.modality) == ("c3", "c3/img1", "MR")
        assert hit.report == "Findings: finding number 3" and hit.score == pytest.approx(1.0, abs=1e-5)
        text_hit = store.search_texts(items[4][2][None, :], 1)[0][0]
        assert text_hit.case_id == "c4" and text_hit.image_id == "c4/img0"
        assert store.get_case("c3")["report"]["findings"] == "finding number 3"
        assert store.case_ids_for_path(Path("/archive/c3_1.jpg")) == {"c3"}
        assert store.patient_of("c3") == "p1"
        assert store.delete_case("c3") and not store.delete_case("c3")
        assert "c3" not in {h.case_id for h in store.search_images(query[None, :], 20)[0]}
        with pytest.raises(DuplicateCaseError, match="c4"):
            store.add_cases(items[4:5])
        assert store.info()["cases"] == 9  # the failed transaction left nothing behind
        store.add_cases(items[4:5], replace=True)
        assert store.info()["cases"] == 9 and len(store.image_index) == 18


def test_filters_and_leakage_exclusions(tmp_path: Path) -> None:
    items = make_cases(12)
    with create(tmp_path / "s") as store:
        store.add_cases(items)
        q = items[0][1]["c0/img0"][None, :]
        mr = store.search_images(q, 24, filters={"modality": "mr"})[0]
        assert mr and {h.modality for h in mr} == {"MR"}
        head_ct = store.search_images(q, 24, filters={"modality": "CT", "body_region": "head"})[0]
        assert {h.case_id for h in head_ct} == {"c0", "c6"}
        south = store.search_texts(items[0][2][None, :], 12, filters={"site": "south"})[0]
        assert {h.case_id for h in south} == {f"c{i}" for i in range(6, 12)}
        guarded = store.search_images(q, 24, exclude_case_ids={"c0"}, exclude_patient_ids={"p1"})[0]
        assert {h.case_id for h in guarded}.isdisjoint({"c0", "c2", "c3"}) and len(guarded) == 18
        with pytest.raises(ValueError, match="invalid filter key"):
            store.search_images(q, 3, filters={"x') OR 1=1 --": "1"})
        assert store.search_images(q, 3, filters={"site": "x' OR '1'='1"})[0] == []


def test_persist_reload_and_recover_after_crash(tmp_path: Path) -> None:
    items = make_cases(8)
    root = tmp_path / "s"
    store = create(root)
    store.add_cases(items[:4])
    store.flush()
    store.add_cases(items[4:])  # committed to SQLite, never flushed: as if killed here
    store.close()
    reopened = CaseStore.open(root)
    assert len(reopened.image_index) == 16 and len(reopened.text_index) == 8
    q = items[6][1]["c6/img0"][None, :]
    assert reopened.search_images(q, 1)[0][0].case_id == "c6"
    reopened.flush()
    reopened.close()
    (root / "image.faiss").write_bytes(b"garbage")  # a torn FAISS file
    again = CaseStore.open(root)
    assert again.search_images(q, 1)[0][0].case_id == "c6"
    again.close()


def test_open_missing_and_create_twice(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="nothing"):
        CaseStore.open(tmp_path / "nothing")
    create(tmp_path / "s").close()
    with pytest.raises(FileExistsError):
        create(tmp_path / "s")


def test_vectors_for_rescoring(tmp_path: Path) -> None:
    items = make_cases(3)
    with create(tmp_path / "s") as store:
        store.add_cases(items)
        vecs = store.image_vectors([("c1", "c1/img0"), ("c2", "c2/img1")])
        assert np.allclose(vecs[0], items[1][1]["c1/img0"]) and np.allclose(vecs[1], items[2][1]["c2/img1"])
        texts = store.case_text_vectors(["c2", "c0", "c2"])
        assert np.allclose(texts[0], items[2][2]) and np.allclose(texts[1], items[0][2])
        assert {(h.case_id, h.image_id) for h in store.image_hits_for_cases(["c1"])} == {
            ("c1", "c1/img0"),
            ("c1", "c1/img1"),
        }
