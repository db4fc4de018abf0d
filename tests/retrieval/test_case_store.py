"""Real SQLite + FAISS: add, search with filters and exclusions, delete, persist, crash recovery."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kgreport.retrieval.config import IndexParams
from kgreport.retrieval.index_check import check_index
from kgreport.retrieval.records import Case, CaseImage, Hit, ReportSections
from kgreport.retrieval.stores.local.store import (
    CaseStore,
    DuplicateCaseError,
    IndexNotFoundError,
    IndexUnreadableError,
)
from kgreport.retrieval.stores.scope import MAX_FILTER_VALUE_CHARS, MAX_FILTERS, InvalidFilterError, SearchScope

DIM, TEXT_DIM = 16, 8
Item = tuple[Case, dict[str, np.ndarray], np.ndarray]


def unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def make_cases(n: int, seed: int = 0, start: int = 0) -> list[Item]:
    """Cases c{start}..: two images each, CT/MR alternating, Head every third, two cases per patient."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(start, start + n):
        modality = "CT" if i % 2 == 0 else "MR"
        images = tuple(
            CaseImage(
                image_id=f"c{i}/img{j}",
                path=Path(f"/archive/c{i}_{j}.jpg"),
                caption=f"image {j}",
                modality=modality,
                body_region="Head" if i % 3 == 0 else "Thorax",
                metadata={"source": Path("/archive")},  # not JSON-native: stored with default=str
            )
            for j in range(2)
        )
        case = Case(
            case_id=f"c{i}",
            images=images,
            report=ReportSections(findings=f"finding number {i}"),
            patient_id=f"p{i // 2}",
            modality=modality,
            metadata={"site": "North" if i < 6 else "South"},
        )
        items.append((case, {img.image_id: unit(rng, DIM) for img in images}, unit(rng, TEXT_DIM)))
    return items


def create(root: Path, params: IndexParams | None = None) -> CaseStore:
    return CaseStore.create(
        root,
        image_dim=DIM,
        text_dim=TEXT_DIM,
        image_encoder="test-img",
        text_encoder="test-txt",
        params=params,
    )


def image_ids_of(store: CaseStore, case_id: str) -> list[str]:
    case = store.get_case(case_id)
    assert case is not None
    return [img.image_id for img in case.images]


def keys(hits: list[Hit]) -> list[tuple[str, str, float]]:
    return [(h.case_id, h.image_id, round(h.score, 5)) for h in hits]


def results(store: CaseStore, items: list[Item]) -> tuple[list, list]:
    """Image and text search results for one query per case, as comparable tuples."""
    image_q = np.stack([next(iter(vectors.values())) for _, vectors, _ in items])
    text_q = np.stack([text for _, _, text in items])
    return (
        [keys(h) for h in store.search_images(image_q, 5)],
        [keys(h) for h in store.search_texts(text_q, 5)],
    )


def test_add_search_get_delete(tmp_path: Path) -> None:
    items = make_cases(10)
    with create(tmp_path / "s") as store:
        assert store.add_cases(items) == 10
        info = store.info()
        assert (info.cases, info.images, info.image_index, info.generation) == (10, 20, "flat", 1)
        query = items[3][1]["c3/img1"]
        hit = store.search_images(query[None, :], 1)[0][0]
        assert (hit.case_id, hit.image_id, hit.modality, hit.body_region, hit.patient_id) == (
            "c3",
            "c3/img1",
            "MR",
            "Head",
            "p1",
        )
        assert hit.report == "Findings: finding number 3" and hit.caption == "image 1"
        assert hit.score == pytest.approx(1.0, abs=1e-5)
        text_hit = store.search_texts(items[4][2][None, :], 1)[0][0]
        assert text_hit.case_id == "c4" and text_hit.image_id == "c4/img0"
        case = store.get_case("c3")
        assert case is not None and case.report["findings"] == "finding number 3"
        assert case.metadata == {"site": "North"} and case.images[0].metadata == {"source": "/archive"}
        assert store.get_case("nope") is None and store.has_case("c3") and not store.has_case("nope")
        assert store.case_ids() == {f"c{i}" for i in range(10)}
        assert store.case_ids_for_path(Path("/archive/c3_1.jpg")) == {"c3"}
        assert store.patient_of("c3") == "p1"
        assert store.delete_case("c3") and not store.delete_case("c3")
        assert "c3" not in {h.case_id for h in store.search_images(query[None, :], 20)[0]}
        assert "c3" not in {h.case_id for h in store.search_texts(items[3][2][None, :], 20)[0]}
        assert (len(store.image_index), len(store.text_index), store.info().generation) == (18, 9, 2)


def test_duplicates_replace_and_atomic_batches(tmp_path: Path) -> None:
    items = make_cases(6)
    with create(tmp_path / "s") as store:
        store.add_cases(items[:4])
        generation = store.generation()
        with pytest.raises(DuplicateCaseError, match="c2"):
            store.add_cases([items[4], items[2]])  # c4 is new, c2 is not: the whole batch is refused
        assert not store.has_case("c4") and len(store.image_index) == 8 and store.generation() == generation
        with pytest.raises(DuplicateCaseError, match="twice"):
            store.add_cases([items[5], items[5]])
        with pytest.raises(ValueError, match="expected \\(16,\\)"):
            store.add_cases([(items[5][0], {"c5/img0": np.ones(3)}, items[5][2])])
        assert store.info().cases == 4 and store.generation() == generation
        replacement = (items[2][0], {"c2/img0": items[2][1]["c2/img0"]}, items[2][2])  # one vector this time
        store.add_cases([replacement], replace=True)
        assert store.info().cases == 4 and len(store.image_index) == 7 and len(store.text_index) == 4
        assert image_ids_of(store, "c2") == ["c2/img0"]
        assert store.search_images(items[2][1]["c2/img1"][None, :], 1)[0][0].image_id != "c2/img1"
        # Ids are never reused: c2's old image rows were 5 and 6, the replacement's is 9 (after c3's 7, 8).
        rows = store.image_rows_for(store.image_index.ids())
        assert [r["id"] for r in rows if r["case_id"] == "c2"] == [9] and 5 not in store.image_index.ids()


def test_images_without_vectors_are_not_stored(tmp_path: Path) -> None:
    case, vectors, text = make_cases(1)[0]
    with create(tmp_path / "s") as store:
        store.add_cases([(case, {"c0/img1": vectors["c0/img1"]}, text)])
        assert image_ids_of(store, "c0") == ["c0/img1"]
        assert store.search_texts(text[None, :], 1)[0][0].image_id == "c0/img1"


def test_filters(tmp_path: Path) -> None:
    items = make_cases(12)
    with create(tmp_path / "s") as store:
        store.add_cases(items)
        q = items[0][1]["c0/img0"][None, :]
        mr = store.search_images(q, 24, SearchScope(filters={"modality": "mr"}))[0]  # case-insensitive
        assert len(mr) == 12 and {h.modality for h in mr} == {"MR"}
        head_ct = store.search_images(q, 24, SearchScope(filters={"modality": "CT", "body_region": "HEAD"}))[0]
        assert {h.case_id for h in head_ct} == {"c0", "c6"} and len(head_ct) == 4
        south = store.search_texts(items[0][2][None, :], 12, SearchScope(filters={"site": "south"}))[0]  # metadata key
        assert {h.case_id for h in south} == {f"c{i}" for i in range(6, 12)}
        by_patient = store.search_images(q, 24, SearchScope(filters={"patient_id": "P2"}))[0]
        assert {h.case_id for h in by_patient} == {"c4", "c5"}
        assert {
            h.case_id for h in store.search_texts(items[0][2][None, :], 5, SearchScope(filters={"case_id": "c7"}))[0]
        } == {"c7"}
        image_source = store.search_images(q, 3, SearchScope(filters={"source": "/archive", "modality": "CT"}))[0]
        assert len(image_source) == 3  # image metadata keys filter too
        assert store.search_images(q, 3, SearchScope(filters={"modality": "PET"}))[0] == []
        assert (
            store.search_images(q, 3, SearchScope(filters={"site": "x' OR '1'='1"}))[0] == []
        )  # values are parameters
        for key in ("x') OR 1=1 --", "modality\n"):  # a trailing newline passes a `$`-anchored match
            with pytest.raises(ValueError, match="invalid filter key"):
                store.search_images(q, 3, SearchScope(filters={key: "1"}))


def test_filters_up_to_the_maximum(tmp_path: Path) -> None:
    """MAX_FILTERS metadata filters run as one query in both spaces (SQLite's expression depth and variable
    limits are what a few hundred hit); one more, or an over-long value, is refused before any SQL."""
    items = make_cases(12)
    many = {"site": "south", **{f"key{i}": None for i in range(MAX_FILTERS - 2)}, "modality": "ct"}
    assert len(many) == MAX_FILTERS
    with create(tmp_path / "s") as store:
        store.add_cases(items)
        image_hits = store.search_images(items[0][1]["c0/img0"][None, :], 24, SearchScope(filters=many))[0]
        text_hits = store.search_texts(items[0][2][None, :], 12, SearchScope(filters=many))[0]
        south = {f"c{i}" for i in range(6, 12)}
        assert image_hits and {h.case_id for h in image_hits} <= south and {h.modality for h in image_hits} == {"CT"}
        assert text_hits and {h.case_id for h in text_hits} <= south
        strict = {f"key{i}": "x" for i in range(MAX_FILTERS)}  # every clause is real SQL, none matches
        assert store.search_texts(items[0][2][None, :], 12, SearchScope(filters=strict))[0] == []
    with pytest.raises(InvalidFilterError, match=f"at most {MAX_FILTERS} filters"):
        SearchScope(filters={f"k{i}": "v" for i in range(MAX_FILTERS + 1)})
    with pytest.raises(InvalidFilterError, match="at most 1024 characters"):
        SearchScope(filters={"site": "s" * (MAX_FILTER_VALUE_CHARS + 1)})


def test_text_filter_matches_a_case_without_images(tmp_path: Path) -> None:
    case, _, text = make_cases(1)[0]
    with create(tmp_path / "s") as store:
        store.add_cases([(case, {}, text)])
        hits = store.search_texts(text[None, :], 3, SearchScope(filters={"modality": "ct"}))[0]
        assert [(h.case_id, h.image_id) for h in hits] == [("c0", "")]


def test_image_only_cases_are_found_by_image_never_by_text(tmp_path: Path) -> None:
    """A case stored without a report: its images are searched as usual, its report side never is, with
    filters, exclusions and `reported_only` alike; counted in info(); and the index still checks clean."""
    items = make_cases(6)
    case, vectors, text = items[1]  # MR, patient p0; its own report vector is given and must not be stored
    items[1] = (replace(case, report=ReportSections()), vectors, text)
    root = tmp_path / "s"
    with create(root) as store:
        store.add_cases(items)
        assert store.get_case("c1").report_text == ""  # type: ignore[union-attr]
        assert not store.case_text_vectors(["c1"]).any(), "an image-only case has a zero report vector"
        info = store.info()
        assert (info.cases, info.cases_with_report, info.cases_image_only) == (6, 5, 1)
        store.flush()
    assert check_index(root).ok, check_index(root).problems
    with CaseStore.open(root) as store:
        for query in (text, *(t for _, _, t in items)):
            hits = store.search_texts(query[None, :], 10)[0]
            assert len(hits) == 5 and "c1" not in {h.case_id for h in hits}, "never found by text, not even last"
        mr = store.search_texts(text[None, :], 10, SearchScope(filters={"modality": "MR"}))[0]
        assert {h.case_id for h in mr} == {"c3", "c5"}
        others = store.search_texts(text[None, :], 10, SearchScope(exclude_case_ids={"c0"}))[0]
        assert {h.case_id for h in others} == {"c2", "c3", "c4", "c5"}
        image = vectors["c1/img0"][None, :]
        hit = store.search_images(image, 1)[0][0]
        assert (hit.case_id, hit.image_id, hit.report) == ("c1", "c1/img0", "") and hit.score > 0.999
        assert len(store.search_images(image, 12, SearchScope(filters={"modality": "MR"}))[0]) == 6
        reported = store.search_images(image, 12, SearchScope(reported_only=True))[0]
        assert len(reported) == 10 and "c1" not in {h.case_id for h in reported}
        reported_mr = store.search_images(image, 12, SearchScope(filters={"modality": "MR"}, reported_only=True))[0]
        assert {h.case_id for h in reported_mr} == {"c3", "c5"}
        ids, _ = store.search_ids("image", image, 12, SearchScope(exclude_case_ids={"c3"}, reported_only=True))[0]
        assert {r["case_id"] for r in store.image_rows_for(ids)} == {"c0", "c2", "c4", "c5"}


def test_leakage_exclusions(tmp_path: Path) -> None:
    items = make_cases(12)
    with create(tmp_path / "s") as store:
        store.add_cases(items)
        q = items[0][1]["c0/img0"][None, :]
        guarded = store.search_images(q, 24, SearchScope(exclude_case_ids={"c0"}, exclude_patient_ids={"p1"}))[0]
        assert {h.case_id for h in guarded}.isdisjoint({"c0", "c2", "c3"}) and len(guarded) == 18
        texts = store.search_texts(items[0][2][None, :], 12, SearchScope(exclude_patient_ids=["p0", "p5"]))[0]
        assert {h.case_id for h in texts} == {f"c{i}" for i in range(2, 10)}
        filtered = store.search_images(q, 24, SearchScope(filters={"modality": "CT"}, exclude_case_ids=["c0", "c2"]))[0]
        assert {h.case_id for h in filtered} == {"c4", "c6", "c8", "c10"}
        many = [f"x{i}" for i in range(50_000)] + ["c1"]  # longer than SQLite's variable limit: one JSON list
        assert "c1" not in {h.case_id for h in store.search_images(q, 24, SearchScope(exclude_case_ids=many))[0]}


def test_flush_and_reopen_loads_without_rebuilding(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    items = make_cases(8)
    root = tmp_path / "s"
    with create(root) as store:
        store.add_cases(items)
        store.flush()
        before = results(store, items)
    assert {p.name for p in root.iterdir()} >= {"store.sqlite", "image.faiss", "text.faiss", "manifest.json"}
    with caplog.at_level(logging.WARNING), CaseStore.open(root) as reopened:
        assert results(reopened, items) == before
        info = reopened.info()
        assert info.flushed_generation == info.generation == 1 and info.files["image.faiss"] > 0
    assert "rebuilding" not in caplog.text


def _crash_after_flush_then_more_writes(root: Path, items: list[Item]) -> None:
    store = create(root)
    store.add_cases(items[:4])
    store.flush()
    store.add_cases(items[4:])  # committed to SQLite, never flushed: as if killed here
    store.delete_case("c1")  # a stale image.faiss would still return c1
    store.close()


def _never_flushed(root: Path, items: list[Item]) -> None:
    store = create(root)
    store.add_cases(items)
    store.delete_case("c1")
    store.close()


def _torn_image_file(root: Path, items: list[Item]) -> None:
    _crash_after_flush_then_more_writes(root, items)
    with CaseStore.open(root) as store:
        store.flush()
    data = (root / "image.faiss").read_bytes()
    (root / "image.faiss").write_bytes(data[: len(data) // 2])


def _missing_text_file(root: Path, items: list[Item]) -> None:
    _crash_after_flush_then_more_writes(root, items)
    with CaseStore.open(root) as store:
        store.flush()
    (root / "text.faiss").unlink()


def _crash_inside_flush(root: Path, items: list[Item]) -> None:
    store = create(root)
    store.add_cases(items[:4])
    store.flush()
    store.add_cases(items[4:])
    store.delete_case("c1")
    store.image_index.save(root / "image.faiss")  # first FAISS file replaced, then killed before the manifest
    store.close()


@pytest.mark.parametrize(
    "crash",
    [
        _crash_after_flush_then_more_writes,
        _never_flushed,
        _torn_image_file,
        _missing_text_file,
        _crash_inside_flush,
    ],
)
def test_reopen_after_crash_equals_a_fresh_build(tmp_path: Path, crash, caplog: pytest.LogCaptureFixture) -> None:
    items = make_cases(10)
    with create(tmp_path / "fresh") as fresh:
        fresh.add_cases([item for item in items if item[0].case_id != "c1"])
        expected = results(fresh, items)
    crash(tmp_path / "s", items)
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING, logger="kgreport.retrieval.stores.local.faiss_mirror"),
        CaseStore.open(tmp_path / "s") as store,
    ):
        assert "rebuilding" in caplog.text
        assert results(store, items) == expected
        assert len(store.image_index) == 18 and len(store.text_index) == 9
        store.flush()
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING, logger="kgreport.retrieval.stores.local.faiss_mirror"),
        CaseStore.open(tmp_path / "s") as store,
    ):
        assert "rebuilding" not in caplog.text and results(store, items) == expected


def test_ivf_store_recovers_as_ivf(tmp_path: Path) -> None:
    items = make_cases(60)
    params = IndexParams(exact_threshold=50)
    root = tmp_path / "s"
    store = create(root, params)
    store.add_cases(items[:30])
    store.flush()
    store.add_cases(items[30:])
    assert store.image_index.kind == "ivf" and store.text_index.kind == "ivf"
    store.close()
    with CaseStore.open(root, params) as reopened:
        assert reopened.info().image_index == "ivf" and len(reopened.image_index) == 120
        image_q = np.stack([vectors[f"c{i}/img0"] for i, (_, vectors, _) in enumerate(items)])
        top = [hits[0].image_id for hits in reopened.search_images(image_q, 1)]
        assert top == [f"c{i}/img0" for i in range(60)]


def test_open_missing_and_create_twice(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match=str(tmp_path / "nothing")):
        CaseStore.open(tmp_path / "nothing")
    assert not CaseStore.exists(tmp_path / "nothing")
    create(tmp_path / "s").close()
    assert CaseStore.exists(tmp_path / "s")
    with pytest.raises(FileExistsError, match="already exists"):
        create(tmp_path / "s")
    (tmp_path / "s" / "manifest.json").write_text("{not json")
    with pytest.raises(IndexUnreadableError, match="manifest.json: not a readable manifest"):
        CaseStore.open(tmp_path / "s")  # there, but broken: not "not found"
    (tmp_path / "s" / "manifest.json").write_text("[1, 2]")
    with pytest.raises(IndexUnreadableError, match="a JSON object is expected"):
        CaseStore.open(tmp_path / "s")


@pytest.mark.parametrize("flushed", [False, True])
def test_open_refuses_a_zero_length_database_and_leaves_it_alone(tmp_path: Path, flushed: bool) -> None:
    """Issue #5: SQLite takes a zero-length file for a new, empty database, so an emptied store.sqlite
    read as an empty index (when never flushed) and got a fresh schema written into it."""
    with create(tmp_path / "s") as store:
        store.add_cases(make_cases(2))
        if flushed:
            store.flush()
    (tmp_path / "s" / "store.sqlite").write_bytes(b"")
    with pytest.raises(IndexUnreadableError, match=r"store.sqlite: not a readable SQLite database \(the file is empty"):
        CaseStore.open(tmp_path / "s")
    assert (tmp_path / "s" / "store.sqlite").stat().st_size == 0


def test_stored_vectors_and_rows(tmp_path: Path) -> None:
    items = make_cases(3)
    with create(tmp_path / "s") as store:
        scaled = [(case, {k: 3 * v for k, v in vectors.items()}, 2 * text) for case, vectors, text in items]
        store.add_cases(scaled)  # stored normalised, like the FAISS copy
        # image row ids 1..6 are c0/img0, c0/img1, c1/img0, ...; case row ids 1..3 are c0, c1, c2
        case_ids, vecs, texts = store.rescoring_rows([3, 6, 999], text=True)
        assert case_ids == ["c1", "c2", ""]
        assert np.allclose(vecs[0], items[1][1]["c1/img0"], atol=1e-6)
        assert np.allclose(vecs[1], items[2][1]["c2/img1"], atol=1e-6) and not vecs[2].any()
        assert texts is not None and np.allclose(texts[1], items[2][2], atol=1e-6) and not texts[2].any()
        assert store.rescoring_rows([3], text=False)[2] is None
        texts = store.case_text_vectors(["c2", "c0", "c2"])
        assert np.allclose(texts[0], items[2][2], atol=1e-6) and np.allclose(texts[1], items[0][2], atol=1e-6)
        assert store.image_ids_of_cases([2]) == [3, 4]
        hits = store.image_hits([6, 999, 1], [0.5, 0.4, 0.3])  # in order; a missing row is left out
        assert [(n, h.case_id, h.image_id, h.score) for n, h in hits.items()] == [
            (6, "c2", "c2/img1", 0.5),
            (1, "c0", "c0/img0", 0.3),
        ]
        ids, scores = store.search_ids(
            "image", items[1][1]["c1/img0"][None, :], 2, SearchScope(exclude_case_ids=["c0"])
        )[0]
        assert ids[0] == 3 and scores[0] == pytest.approx(1.0, abs=1e-5) and 1 not in ids and 2 not in ids
        rows = store.image_rows_for([6, 999, 1])  # FAISS image ids are the image row ids
        assert [(r["case_id"], r["image_id"]) for r in rows] == [("c2", "c2/img1"), ("c0", "c0/img0")]
        assert rows[0]["patient_id"] == "p1" and rows[0]["metadata"] == {"source": "/archive"}


def test_a_reader_catches_up_with_another_process_writes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two handles on one folder stand for two processes (service workers, or the CLI beside the service)."""
    items = make_cases(8)
    caplog.set_level(logging.INFO, logger="kgreport.retrieval.stores.local.faiss_mirror")
    with create(tmp_path / "s") as writer:
        writer.add_cases(items[:3])
        writer.flush()
        with CaseStore.open(tmp_path / "s") as reader:
            query = items[4][1]["c4/img0"][None, :]
            assert "c4" not in {h.case_id for h in reader.search_images(query, 3)[0]}
            writer.add_cases(items[3:6])
            writer.add_cases(
                [(items[2][0], items[4][1] | {"c2/img0": items[4][1]["c4/img0"]}, items[2][2])], replace=True
            )
            writer.delete_case("c5")
            # The reader applies the three logged writes to its copy: nothing is reloaded or rebuilt.
            assert {h.case_id for h in reader.search_images(query, 2)[0]} == {"c4", "c2"}
            assert "c5" not in {h.case_id for h in reader.search_texts(items[5][2][None, :], 12)[0]}
            assert reader.search_texts(items[3][2][None, :], 1)[0][0].case_id == "c3"
            assert not [r for r in caplog.records if "reloading" in r.message or "rebuilding" in r.message]

            reader.add_cases(items[6:7])
            writer.add_cases(items[7:])  # the writer had not seen c6: its own write catches up with it first
            assert [writer.search_texts(items[n][2][None, :], 1)[0][0].case_id for n in (6, 7)] == ["c6", "c7"]
            assert not [r for r in caplog.records if "reloading" in r.message or "rebuilding" in r.message]

            # When the log no longer reaches back far enough, the reader reloads from SQLite instead.
            writer.delete_case("c7")
            writer.rows.db.execute("DELETE FROM changes")
            assert "c7" not in {h.case_id for h in reader.search_texts(items[7][2][None, :], 12)[0]}
            assert any("reloading" in r.message for r in caplog.records)
            assert len(reader.search_images(query, 100)[0]) == len(writer.search_images(query, 100)[0]) == 11


def test_concurrent_searches_and_writes(tmp_path: Path) -> None:
    items = make_cases(40)
    errors: list[BaseException] = []
    with create(tmp_path / "s") as store:
        store.add_cases(items[:10])

        def search() -> None:
            try:
                for _ in range(30):
                    assert len(store.search_images(items[0][1]["c0/img0"][None, :], 3)[0]) == 3
            except BaseException as err:  # pragma: no cover - reported below
                errors.append(err)

        threads = [threading.Thread(target=search) for _ in range(4)]
        for t in threads:
            t.start()
        for start in range(10, 40, 5):
            store.add_cases(items[start : start + 5])
        for t in threads:
            t.join()
        assert not errors and store.info().cases == 40 and len(store.image_index) == 80
