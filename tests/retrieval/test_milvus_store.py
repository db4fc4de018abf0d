"""The Milvus case store against a real Milvus server, answer for answer beside the embedded store.

The same cases go into a FAISS + SQLite `CaseStore` and a `MilvusCaseStore`; every search (filters,
exclusions, image-only cases), every read and every write must give the same results on both.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kgreport.retrieval.config import IndexParams
from kgreport.retrieval.records import Hit, ReportSections
from kgreport.retrieval.stores.local.store import (
    CaseStore,
    DuplicateCaseError,
    IndexNotFoundError,
    IndexUnreadableError,
)
from kgreport.retrieval.stores.milvus import registry as milvus_registry
from kgreport.retrieval.stores.milvus import store as milvus_store
from kgreport.retrieval.stores.milvus.connection import (
    LEGACY_REGISTRY,
    REGISTRY,
    CaseStoreUnavailableError,
    MilvusConnection,
    MilvusSettings,
    collection_base,
)
from kgreport.retrieval.stores.milvus.filters import UnknownFilterFieldError
from kgreport.retrieval.stores.milvus.store import MilvusCaseStore
from kgreport.retrieval.stores.scope import SearchScope
from kgreport.testkit.milvus_server import MilvusUnderTest
from tests.retrieval.test_case_store import DIM, TEXT_DIM, create, make_cases

pytestmark = pytest.mark.milvus


@pytest.fixture(scope="module")
def connection(milvus: MilvusUnderTest) -> Iterator[MilvusConnection]:
    conn = MilvusConnection(MilvusSettings(milvus.url))
    yield conn
    conn.close()


def create_milvus(connection: MilvusConnection, name: str, params: IndexParams | None = None) -> MilvusCaseStore:
    MilvusCaseStore.drop(connection, name)
    return MilvusCaseStore.create(
        connection,
        name,
        image_dim=DIM,
        text_dim=TEXT_DIM,
        image_encoder="test-img",
        text_encoder="test-txt",
        params=params,
    )


def both(tmp_path: Path, connection: MilvusConnection, name: str, n: int = 12) -> tuple[CaseStore, MilvusCaseStore]:
    items = make_cases(n)
    faiss_store, milvus_store = create(tmp_path / "idx"), create_milvus(connection, name)
    for store in (faiss_store, milvus_store):
        store.add_cases(items)
    return faiss_store, milvus_store


def same_hits(got: list[list[Hit]], expected: list[list[Hit]]) -> bool:
    """Same cases and images in the same order, scores equal to float32 precision."""
    ids = [[(h.case_id, h.image_id) for h in hits] for hits in got]
    if ids != [[(h.case_id, h.image_id) for h in hits] for hits in expected]:
        return False
    return all(
        abs(a.score - b.score) < 1e-5 for g, e in zip(got, expected, strict=True) for a, b in zip(g, e, strict=True)
    )


SEARCHES = [
    {},
    {"filters": {"modality": "ct"}},
    {"filters": {"body_region": "HEAD", "site": "north"}},
    {"filters": {"patient_id": "P1"}},
    {"exclude_case_ids": ["c0", "c3"], "exclude_patient_ids": ["p2"]},
    {"filters": {"modality": "MR"}, "exclude_patient_ids": ["p1"]},
]


@pytest.fixture(scope="module")
def parity(tmp_path_factory: pytest.TempPathFactory, connection: MilvusConnection) -> tuple[CaseStore, MilvusCaseStore]:
    """The same twelve cases in both stores, made once for the searches below."""
    return both(tmp_path_factory.mktemp("parity"), connection, "parity")


@pytest.mark.parametrize("search", SEARCHES)
def test_searches_match_the_embedded_store(parity: tuple[CaseStore, MilvusCaseStore], search: dict) -> None:
    faiss_store, milvus_store = parity
    items = make_cases(12)
    image_queries = np.stack([next(iter(v.values())) for _, v, _ in items])
    text_queries = np.stack([t for _, _, t in items])
    for k in (1, 5, 30):
        got = milvus_store.search_images(image_queries, k, SearchScope(**search))
        assert same_hits(got, faiss_store.search_images(image_queries, k, SearchScope(**search)))
        got = milvus_store.search_texts(text_queries, k, SearchScope(**search))
        assert same_hits(got, faiss_store.search_texts(text_queries, k, SearchScope(**search)))
    hit = milvus_store.search_images(image_queries[:1], 1, SearchScope(**search))[0]
    expected = faiss_store.search_images(image_queries[:1], 1, SearchScope(**search))[0]
    assert [replace(h, score=round(h.score, 4)) for h in hit] == [replace(h, score=round(h.score, 4)) for h in expected]


def test_reads_match_the_embedded_store(parity: tuple[CaseStore, MilvusCaseStore]) -> None:
    faiss_store, milvus_store = parity
    assert milvus_store.case_ids_in_order() == faiss_store.case_ids_in_order()
    assert milvus_store.get_case("c4") == faiss_store.get_case("c4")
    assert milvus_store.get_case("nope") is None
    assert milvus_store.patient_of("c5") == "p2"
    assert milvus_store.case_ids_for_path(Path("/archive/c3_1.jpg")) == {"c3"}
    assert [c.case_id for c in milvus_store.stored_cases()] == [c.case_id for c in faiss_store.stored_cases()]
    info, expected = milvus_store.info(), faiss_store.info()
    for key in ("cases", "cases_with_report", "cases_image_only", "images", "image_dim", "text_dim", "image_index"):
        assert getattr(info, key) == getattr(expected, key), key
    # Rescoring reads: stored vectors by image id, in order, zeros for unknown ids.
    ids, _ = milvus_store.search_ids("image", make_cases(12)[2][1]["c2/img0"][None, :], 4)[0]
    case_ids, images, texts = milvus_store.rescoring_rows([*ids, 999], text=True)
    faiss_ids, _ = faiss_store.search_ids("image", make_cases(12)[2][1]["c2/img0"][None, :], 4)[0]
    f_case_ids, f_images, f_texts = faiss_store.rescoring_rows(faiss_ids, text=True)
    assert case_ids == [*f_case_ids, ""]
    assert np.allclose(images[:-1], f_images, atol=1e-6) and not images[-1].any()
    assert texts is not None and f_texts is not None and np.allclose(texts[:-1], f_texts, atol=1e-6)
    assert len(milvus_store.sibling_image_ids(ids[:1])) == 2
    assert np.allclose(milvus_store.case_text_vectors(["c1", "zz"]), faiss_store.case_text_vectors(["c1", "zz"]))


def test_writes_delete_replace_and_image_only(tmp_path: Path, connection: MilvusConnection) -> None:
    faiss_store, milvus_store = both(tmp_path, connection, "writes", n=6)
    before = milvus_store.generation()
    with pytest.raises(DuplicateCaseError):
        milvus_store.add_cases(make_cases(1, start=2))
    case, vectors, text = make_cases(1, seed=5, start=2)[0]
    changed = (replace(case, report=ReportSections(findings="rewritten")), vectors, text)
    unreported = make_cases(1, seed=9, start=40)[0]
    unreported = (replace(unreported[0], report=ReportSections()), unreported[1], unreported[2])
    for store in (faiss_store, milvus_store):
        store.add_cases([changed], replace=True)
        store.add_cases([unreported])
        assert store.delete_case("c1") and not store.delete_case("c1")
    assert milvus_store.generation() == before + 3
    assert milvus_store.get_case("c2") == faiss_store.get_case("c2")
    assert milvus_store.info().cases_image_only == 1
    image_queries = np.stack([next(iter(unreported[1].values())), next(iter(vectors.values()))])
    for search in ({}, {"reported_only": True}):
        got = milvus_store.search_images(image_queries, 10, SearchScope(**search))
        assert same_hits(got, faiss_store.search_images(image_queries, 10, SearchScope(**search)))
    text_queries = np.stack([unreported[2], text])
    assert same_hits(milvus_store.search_texts(text_queries, 10), faiss_store.search_texts(text_queries, 10))


def test_a_write_cut_short_is_never_read_and_is_cleaned_by_the_next(connection: MilvusConnection) -> None:
    store = create_milvus(connection, "cut")
    store.add_cases(make_cases(2))
    case, vectors, text = make_cases(1, seed=3, start=7)[0]
    # What a writer killed between its two inserts leaves: image rows, no case row.
    from kgreport.retrieval.stores.milvus.schema import image_row

    connection.client.insert(store.images, [image_row(case, img, vectors[img.image_id]) for img in case.images])
    query = vectors[case.images[0].image_id][None, :]
    assert all(h.case_id != "c7" for h in store.search_images(query, 10)[0])
    assert not store.has_case("c7") and store.case_ids_for_path(case.images[0].path) == set()
    store.add_cases([(case, vectors, text)])  # the resumed write
    assert store.info().images == 6 and store.search_images(query, 1)[0][0].case_id == "c7"


def test_switches_to_hnsw_at_the_threshold(connection: MilvusConnection) -> None:
    store = create_milvus(connection, "ivf", IndexParams(exact_threshold=30, nprobe=64))
    items = make_cases(20)
    store.add_cases(items[:10])
    assert store.info().image_index == "flat"
    store.add_cases(items[10:])
    assert store.info().image_index == "hnsw" and store.info().text_index == "flat"
    query = items[13][1]["c13/img1"][None, :]
    assert store.search_images(query, 1)[0][0].image_id == "c13/img1"


def test_bad_input(connection: MilvusConnection) -> None:
    store = create_milvus(connection, "bad.name:1")
    store.add_cases(make_cases(2))
    with pytest.raises(UnknownFilterFieldError, match="'nosuch'.*site"):
        store.search_images(np.ones((1, DIM), np.float32), 3, SearchScope(filters={"nosuch": "x"}))
    with pytest.raises(ValueError, match="invalid filter key"):
        store.search_images(
            np.ones((1, DIM), np.float32), 3, SearchScope(filters={'site"] == "x" or true or meta_lc["a': "x"})
        )
    # A value cannot leave its quotes: it is matched as text, and matches nothing.
    assert (
        store.search_images(np.ones((1, DIM), np.float32), 3, SearchScope(filters={"site": 'north" or true or "'}))[0]
        == []
    )
    with pytest.raises(FileExistsError):
        create_milvus_again = MilvusCaseStore.create  # the same name twice
        create_milvus_again(
            connection, "bad.name:1", image_dim=DIM, text_dim=TEXT_DIM, image_encoder="a", text_encoder="b"
        )
    with pytest.raises(IndexNotFoundError):
        MilvusCaseStore.open(connection, "never-made")
    assert collection_base("bad.name:1") != collection_base("bad_name_1")
    # A collection whose vectors are not the size the index's manifest (and encoder) says.
    assert store.manifest.collections is not None
    cases = store.manifest.collections["cases"]  # the collection under the alias `store.cases`
    connection.client.drop_alias(store.cases)
    connection.client.drop_collection(cases)
    from kgreport.retrieval.stores.milvus.schema import case_schema, vector_index

    connection.client.create_collection(
        cases,
        schema=case_schema(TEXT_DIM + 1),
        index_params=vector_index(connection.client, "flat", 0, IndexParams()),
    )
    connection.client.create_alias(cases, store.cases)
    with pytest.raises(IndexUnreadableError, match=f"{TEXT_DIM + 1}-d.*{TEXT_DIM}-d"):
        MilvusCaseStore.open(connection, "bad.name:1")
    assert MilvusCaseStore.drop(connection, "bad.name:1") and not MilvusCaseStore.exists(connection, "bad.name:1")


def test_unreachable_server_and_bad_urls_are_clear_errors() -> None:
    """(A server that goes away and comes back, under a running service: tests/api/test_replicas.py.)"""
    with pytest.raises(CaseStoreUnavailableError, match="127.0.0.1:1"):
        MilvusConnection(MilvusSettings("milvus://127.0.0.1:1", timeout=2))
    with pytest.raises(ValueError, match="credentials"):
        MilvusSettings("milvus://user:pw@host:19530").endpoint()
    with pytest.raises(ValueError, match="milvus://HOST:PORT"):
        MilvusSettings("http://host:19530").endpoint()


def test_a_rebuilt_copy_is_swapped_in_under_the_name(
    connection: MilvusConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(milvus_store, "REPLACED_CHECK_S", 0.0)  # ask the registry every time
    old = create_milvus(connection, "swap")
    old.add_cases(make_cases(2))
    staging = create_milvus(connection, "swap.rebuild~")
    staging.add_cases(make_cases(3, seed=4))
    assert old.replaced_on_disk() is False
    current = milvus_registry.swap_in(connection, "swap.rebuild~", "swap")
    assert old.replaced_on_disk() is True  # every replica's open handle sees it must open the index anew
    assert old.info().cases == 3  # and, through the index's aliases, already reads the new copy
    swapped = MilvusCaseStore.open(connection, "swap")
    assert swapped.info().cases == 3 and swapped.manifest.created == staging.manifest.created
    assert swapped.manifest.collections is not None
    assert (swapped.manifest.collections["images"], swapped.manifest.collections["cases"]) == current
    assert (swapped.images, swapped.cases) == (old.images, old.cases)  # the aliases, not the collections
    assert not MilvusCaseStore.exists(connection, "swap.rebuild~") and "swap.rebuild~" not in MilvusCaseStore.names(
        connection
    )
    query = make_cases(3, seed=4)[2][1]["c2/img1"][None, :]
    assert swapped.search_images(query, 1)[0][0].image_id == "c2/img1"
    milvus_registry.retire(connection, "swap", keep=current)
    assert own_collections(connection, "swap") == sorted(current)
    assert old.info().cases == 3  # the replaced copy is gone, and no handle was reading it


def until(condition: Callable[[], bool], what: str, seconds: float = 120.0) -> None:
    """Wait on a condition (a count of answers), never on a fixed sleep."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_reads_through_a_rebuild_swap_never_fail(connection: MilvusConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    """Handles opened before a swap read through the index's aliases: they read the new copy from the
    moment the aliases move, so dropping the old copy at once (no grace) fails none of their reads."""
    monkeypatch.setattr(milvus_store, "RETIRE_AFTER_S", 0.0)
    old = create_milvus(connection, "busy")
    old.add_cases(make_cases(4))
    staging = create_milvus(connection, "busy.rebuild~")
    rebuilt = make_cases(5, seed=9)
    staging.add_cases(rebuilt)
    image_query = rebuilt[3][1]["c3/img1"][None, :]
    text_query = rebuilt[3][2][None, :]
    answers: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                answers.append(len(old.search_images(image_query, 3)[0]) + len(old.search_texts(text_query, 3)[0]))
                answers.append(old.info().cases)
            except BaseException as err:  # noqa: BLE001  (every failure counts)
                failures.append(err)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        until(lambda: len(answers) >= 10 or bool(failures), "reads before the swap")
        MilvusCaseStore.swap_in(connection, "busy.rebuild~", "busy")  # moves the aliases, drops the old copy
        after = len(answers)
        until(lambda: len(answers) >= after + 10 or bool(failures), "reads after the swap")
    finally:
        stop.set()
        reader.join()
    assert failures == []
    assert old.info().cases == 5 and old.search_images(image_query, 1)[0][0].image_id == "c3/img1"
    assert len(own_collections(connection, "busy")) == 2  # only the new copy is left


def own_collections(connection: MilvusConnection, name: str) -> list[str]:
    base = collection_base(name)
    return sorted(c for c in connection.client.list_collections() if c.startswith((f"{base}_images", f"{base}_cases")))


def test_long_names_and_a_create_cut_short(connection: MilvusConnection) -> None:
    long_name = "a." * 64  # 128 characters, spelled out as 256: past Milvus's limit, so hashed
    store = create_milvus(connection, long_name)
    store.add_cases(make_cases(2))
    assert MilvusCaseStore.open(connection, long_name).info().cases == 2
    assert collection_base(long_name).startswith("kgreport__") and collection_base(long_name[:-1]).startswith(
        "kgreport__"
    )
    assert collection_base(long_name) != collection_base(long_name[:-1])
    assert MilvusCaseStore.drop(connection, long_name) and own_collections(connection, long_name) == []
    # A create killed after making its collections, before registering them: the next create drops them.
    milvus_registry.create_collections(connection, "cut2", DIM, TEXT_DIM, IndexParams())
    assert len(own_collections(connection, "cut2")) == 2 and not MilvusCaseStore.exists(connection, "cut2")
    made = create_milvus(connection, "cut2")
    assert made.manifest.collections is not None
    assert own_collections(connection, "cut2") == sorted([made.manifest.collections[k] for k in ("images", "cases")])


def registry_rows(connection: MilvusConnection, name: str) -> list[dict]:
    return connection.query(REGISTRY, f'name == "{name}"', ["pk", "generation"])


def test_the_registry_only_inserts_and_reads_the_newest_row(connection: MilvusConnection) -> None:
    store = create_milvus(connection, "reg")
    for seed in range(3):
        store.add_cases(make_cases(1, seed=seed, start=seed))
    assert [int(r["generation"]) for r in registry_rows(connection, "reg")] == [3]  # older rows deleted
    # What a writer killed between its insert and its delete leaves: an older row beside the newest.
    stale_manifest = {**store.manifest.to_json(), "created": "stale"}
    stale = {"name": "reg", "manifest": stale_manifest, "generation": 1, "unused": [0.0, 0.0]}
    connection.client.insert(REGISTRY, [stale])
    assert store.generation() == 3 and MilvusCaseStore.open(connection, "reg").manifest == store.manifest
    assert MilvusCaseStore.names(connection).count("reg") == 1
    store.add_cases(make_cases(1, seed=5, start=5))
    assert [int(r["generation"]) for r in registry_rows(connection, "reg")] == [4]
    assert MilvusCaseStore.drop(connection, "reg") and registry_rows(connection, "reg") == []


def test_the_first_registry_is_moved_on_first_use(milvus: MilvusUnderTest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Indexes registered by the first layout (one row per index, upserted under its name) stay usable."""
    from pymilvus import DataType, MilvusClient

    from kgreport.retrieval.stores.milvus.schema import vector_index

    first = MilvusConnection(MilvusSettings(milvus.url))
    store = create_milvus(first, "moved")
    store.add_cases(make_cases(2))
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("name", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("manifest", DataType.JSON)
    schema.add_field("generation", DataType.INT64)
    schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
    client = first.client
    index = vector_index(client, "flat", 0, IndexParams(), field="unused")
    client.create_collection(LEGACY_REGISTRY, schema=schema, index_params=index)
    manifest = replace(store.manifest, collections=None)
    assert store.manifest.collections is not None
    for kind in ("images", "cases"):  # the first layout's names, and no aliases
        client.drop_alias(store.manifest.collections[f"{kind}_alias"])
        client.rename_collection(store.manifest.collections[kind], f"{collection_base('moved')}_{kind}")
    legacy_row = {"name": "moved", "manifest": manifest.to_json(), "generation": 7, "unused": [0.0, 0.0]}
    client.upsert(LEGACY_REGISTRY, [legacy_row])
    client.delete(REGISTRY, filter='name == "moved"')  # as if it had only ever been in the first registry
    first.close()

    later = MilvusConnection(MilvusSettings(milvus.url))  # a replica started after the upgrade
    try:
        assert "moved" in MilvusCaseStore.names(later)
        assert not later.client.has_collection(LEGACY_REGISTRY)
        reopened = MilvusCaseStore.open(later, "moved")
        assert reopened.generation() == 7 and reopened.info().cases == 2 and reopened.manifest == manifest
        # A rebuild swapped in replaces the untagged collections with tagged ones.
        monkeypatch.setattr(milvus_store, "RETIRE_AFTER_S", 0.0)
        create_milvus(later, "moved.rebuild~").add_cases(make_cases(3))
        MilvusCaseStore.swap_in(later, "moved.rebuild~", "moved")
        swapped = MilvusCaseStore.open(later, "moved")
        assert swapped.manifest.collections is not None
        tagged = sorted(swapped.manifest.collections[k] for k in ("images", "cases"))
        assert swapped.info().cases == 3 and own_collections(later, "moved") == tagged
        assert swapped.generation() == 8 and not MilvusCaseStore.exists(later, "moved.rebuild~")
    finally:
        MilvusCaseStore.drop(later, "moved")
        later.close()
