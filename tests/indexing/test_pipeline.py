"""End to end on real MedPix cases with the bundled CT encoder and MiniLM: build, search, resume."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kgreport.indexing.archives.medpix import MedPixArchive
from kgreport.indexing.options import IngestOptions
from kgreport.indexing.pipeline import Ingestor
from kgreport.retrieval.config import SearchConfig
from kgreport.retrieval.encoders.coalescing import QueryCoalescers
from kgreport.retrieval.encoders.image_encoder import CTEncoder, load_image_encoder
from kgreport.retrieval.encoders.text_encoder import TextEncoder
from kgreport.retrieval.index_check import check_index
from kgreport.retrieval.query_cache import QueryCache
from kgreport.retrieval.records import Case, CaseImage, ReportSections, SkippedItem
from kgreport.retrieval.search import CaseSearcher, Query, QueryError
from kgreport.retrieval.stores.local.store import CaseStore

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def encoders() -> tuple[CTEncoder, TextEncoder]:
    encoder = load_image_encoder(REPO / "data" / "models" / "ct-encoder")
    assert isinstance(encoder, CTEncoder)
    return encoder, TextEncoder()


def _store(root: Path, encoders: tuple[CTEncoder, TextEncoder]) -> CaseStore:
    image, text = encoders
    return CaseStore.create_for(root, image, text)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, encoders, medpix_root_module: Path):
    root = tmp_path_factory.mktemp("idx") / "medpix50"
    store = _store(root, encoders)
    archive = MedPixArchive(medpix_root_module, "train", limit=50)
    summary = Ingestor(store, *encoders).ingest(archive)
    yield store, summary, archive
    store.close()


@pytest.fixture(scope="module")
def medpix_root_module() -> Path:
    shared = REPO.parent / "shared" / "data" / "medpix2"
    return shared if (shared / "data_train.jsonl").is_file() else REPO / "data" / "demo"


def test_build_indexes_every_case_and_image(built) -> None:
    store, summary, archive = built
    cases = [c for c in archive if isinstance(c, Case)]
    assert summary.cases_added == len(cases) >= 45
    assert summary.images_added == sum(len(c.images) for c in cases)
    info = store.info()
    assert info.cases == len(cases) and info.images == summary.images_added


def test_image_search_finds_similar_cases_and_votes(built, encoders) -> None:
    store, _, archive = built
    searcher = CaseSearcher(store, *encoders)
    case = next(c for c in archive if isinstance(c, Case) and len(c.images) >= 2)
    result = searcher.search(Query(image=case.images[0].path), k=5)
    assert len(result.hits) == 5
    assert case.case_id not in {h.case_id for h in result.hits}, "leakage guard: own case must not come back"
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)
    assert result.predicted.modality == case.images[0].modality
    assert 0 < result.predicted.modality_confidence <= 1
    embedded = searcher.embed_image(case.images[0].path)
    assert searcher.search(Query(image=case.images[0].path), k=5, embedded=embedded) == result
    open_result = searcher.search(Query(image=case.images[0].path), k=5, leakage_guard=False)
    assert open_result.hits[0].case_id == case.case_id and open_result.hits[0].score > 0.99


def test_filters_text_and_hybrid_queries(built, encoders) -> None:
    store, _, _ = built
    searcher = CaseSearcher(store, *encoders)
    mr = searcher.search(Query(text="axial MR of the brain"), k=5, filters={"modality": "MR"})
    assert mr.hits and all(h.modality == "MR" for h in mr.hits)
    thorax = searcher.search(Query(text="CT chest lung mass"), k=5, filters={"body_region": "thorax"})
    assert thorax.hits and all(h.body_region == "Thorax" for h in thorax.hits)
    image = next(iter(store.case_ids()))
    path = Path(store.get_case(image).images[0].path)  # type: ignore[union-attr]
    hybrid = searcher.search(Query(image=path, text="brain tumour"), k=3)
    assert len(hybrid.hits) == 3


def test_repeated_queries_reuse_their_embeddings(built, encoders, tmp_path: Path) -> None:
    store, _, archive = built
    cache = QueryCache(16)
    searcher = CaseSearcher(store, *encoders, cache=cache)
    images = [c.images[0].path for c in archive if isinstance(c, Case)][:2]
    upload, again = tmp_path / "upload-1" / images[0].name, tmp_path / "upload-2" / images[0].name
    for copy in (upload, again):  # the service saves each upload under a new temporary path
        copy.parent.mkdir()
        shutil.copy(images[0], copy)
    first = searcher.search(Query(image=upload), k=5)
    assert cache.stats()["misses"] == 1 and cache.hits == 0
    assert searcher.search(Query(image=again), k=5).hits == first.hits
    assert cache.hits == 1
    uncached = CaseSearcher(store, *encoders).search(Query(image=again), k=5)
    assert [h.case_id for h in uncached.hits] == [h.case_id for h in first.hits]
    vector, _ = searcher.embed_image(images[1])
    assert cache.hits == 1 and not vector.flags.writeable  # other bytes: encoded; shared vectors are read-only
    text = searcher.search(Query(text="enhancing brain mass"), k=5)
    assert searcher.search(Query(text="enhancing brain mass"), k=5) == text
    assert cache.hits == 3  # the report-space and the image-space text vectors


def test_coalesced_queries_match_direct_ones(built, encoders) -> None:
    store, _, archive = built
    direct = CaseSearcher(store, *encoders)
    coalesced = CaseSearcher(store, *encoders, coalescers=QueryCoalescers(*encoders))
    image = next(c for c in archive if isinstance(c, Case)).images[0].path
    for query in (Query(image=image), Query(text="enhancing brain mass"), Query(image=image, text="mass")):
        ours, theirs = coalesced.search(query, k=5), direct.search(query, k=5)
        assert [h.case_id for h in ours.hits] == [h.case_id for h in theirs.hits]
        assert np.allclose([h.score for h in ours.hits], [h.score for h in theirs.hits], atol=1e-5)


def test_bad_queries_are_clear_errors(built, encoders, tmp_path: Path) -> None:
    store, _, _ = built
    searcher = CaseSearcher(store, *encoders)
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is a report, not an image")
    with pytest.raises(QueryError, match="notes.png"):
        searcher.search(Query(image=not_image))
    with pytest.raises(QueryError, match="not found"):
        searcher.search(Query(image=tmp_path / "missing.jpg"))
    with pytest.raises(QueryError, match="needs an image or a non-empty text"):
        searcher.search(Query(text="   "))


def test_unreadable_images_and_empty_reports_are_skipped_and_counted(
    tmp_path: Path, encoders, demo_archive: Path
) -> None:
    store = _store(tmp_path / "idx", encoders)
    good = next(c for c in MedPixArchive(demo_archive, "train") if isinstance(c, Case))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    items: list[Case | SkippedItem] = [
        good,
        Case(case_id="broken", images=(CaseImage("broken/1", broken),), report=good.report),
        Case(case_id="empty", images=good.images, report=type(good.report)()),
        SkippedItem(source="row 7", reason="row without case_id"),
    ]
    summary = Ingestor(store, *encoders).ingest(items)
    assert summary.cases_added == 1
    reasons = {s.source: s.reason for s in summary.skipped}
    assert "unreadable image" in reasons["broken/broken/1"]
    assert reasons["broken"] == "no readable image"
    assert reasons["empty"] == "empty report"
    assert reasons["row 7"] == "row without case_id"
    store.close()


def test_a_case_without_a_report_is_indexed_image_only_when_asked(tmp_path: Path, encoders, demo_archive: Path) -> None:
    """Issue 16: a study with no report is skipped by default; with `image_only` it is indexed by its images,
    counted, found by its image and never by text (a text or an image + text query)."""
    cases = [c for c in MedPixArchive(demo_archive, "train") if isinstance(c, Case)][:4]
    unreported = replace(cases[3], report=ReportSections())
    items = [*cases[:3], unreported]
    default = _store(tmp_path / "default", encoders)
    skipped = Ingestor(default, *encoders).ingest(items)
    assert (skipped.cases_added, skipped.image_only) == (3, 0)
    assert {s.source: s.reason for s in skipped.skipped} == {unreported.case_id: "empty report"}
    default.close()

    store = _store(tmp_path / "idx", encoders)
    summary = Ingestor(store, *encoders, IngestOptions(image_only=True)).ingest(items)
    assert (summary.cases_added, summary.image_only, summary.skipped) == (4, 1, [])
    assert summary.as_json()["image_only"] == 1 and summary.images_added == sum(len(c.images) for c in items)
    info = store.info()
    assert (info.cases, info.cases_with_report, info.cases_image_only) == (4, 3, 1)
    assert store.get_case(unreported.case_id).report_text == ""  # type: ignore[union-attr]
    assert not store.case_text_vectors([unreported.case_id]).any()
    store.flush()
    check = check_index(store.root)
    assert check.ok and check.facts["text_vectors"] == 4, check.problems

    searcher = CaseSearcher(store, *encoders, SearchConfig(leakage_guard=False))
    own_image = unreported.images[0].path
    by_image = searcher.search(Query(image=own_image), k=4)
    assert by_image.hits[0].case_id == unreported.case_id and by_image.hits[0].report == ""
    words = " ".join(img.caption for img in unreported.images) or "brain"  # its captions: no report side to find
    for query in (Query(text=words), Query(image=own_image, text=words)):
        hits = searcher.search(query, k=4).hits
        assert len(hits) == 3 and unreported.case_id not in {h.case_id for h in hits}, query.label
    store.close()


def test_build_killed_midway_is_finished_by_rerunning(tmp_path: Path, encoders, demo_archive: Path) -> None:
    archive = MedPixArchive(demo_archive, "train")
    total = sum(isinstance(c, Case) for c in archive)
    store = _store(tmp_path / "idx", encoders)

    def crashing() -> Iterator[Case | SkippedItem]:
        for i, item in enumerate(archive):
            if i == 37:
                raise KeyboardInterrupt("simulated kill")
            yield item

    with pytest.raises(KeyboardInterrupt):
        Ingestor(store, *encoders, IngestOptions(batch_cases=8, flush_every_batches=100)).ingest(crashing())
    store.close()  # nothing flushed: FAISS files lag behind SQLite, as after a real kill
    reopened = CaseStore.open(tmp_path / "idx")
    partial = reopened.info().cases
    assert 0 < partial < total
    summary = Ingestor(reopened, *encoders).ingest(archive)
    assert summary.cases_already_present == partial
    assert reopened.info().cases == total
    searcher = CaseSearcher(reopened, *encoders)
    hits = searcher.search(Query(text="brain"), k=total, per_image=True).hits
    keys = [(h.case_id, h.image_id) for h in hits]
    assert len(keys) == len(set(keys)), "no duplicates after resume"
    reopened.close()
    shutil.rmtree(tmp_path / "idx")


def test_volumes_index_and_query_with_patient_leakage_guard(tmp_path: Path, encoders) -> None:
    """DICOM series and NIfTI volumes go through the same path; a patient's other study never comes back."""
    import json

    import nibabel as nib
    import numpy as np
    import pydicom

    from kgreport.indexing.archives.dicom_folder import DicomFolderArchive

    series_dir = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "77654033" / "CT2"
    archive_dir = tmp_path / "archive"
    for study, patient in (("1.9.1", "P1"), ("1.9.2", "P1"), ("1.9.3", "P2")):
        (archive_dir / study).mkdir(parents=True)
        for f in sorted(series_dir.iterdir()):
            ds = pydicom.dcmread(f)
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = study, study + ".1", patient
            if patient == "P2":  # different pixels: an identical image would be caught as a duplicate
                ds.PixelData = np.ascontiguousarray(ds.pixel_array[::-1, ::-1]).tobytes()
            ds.save_as(archive_dir / study / f"{f.name}.dcm")
    rows = [{"case_id": s, "report": f"FINDINGS: study {s}."} for s in ("1.9.1", "1.9.2", "1.9.3")]
    (archive_dir / "reports.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = _store(tmp_path / "idx", encoders)
    summary = Ingestor(store, *encoders).ingest(DicomFolderArchive(archive_dir))
    assert summary.cases_added == 3 and summary.images_added == 3
    searcher = CaseSearcher(store, *encoders)
    result = searcher.search(Query(image=archive_dir / "1.9.1"), k=3)
    assert [h.case_id for h in result.hits] == ["1.9.3"], "own study and the same patient's other study are excluded"
    unguarded = searcher.search(Query(image=archive_dir / "1.9.1"), k=3, leakage_guard=False)
    assert {h.case_id for h in unguarded.hits} == {"1.9.1", "1.9.2", "1.9.3"}
    volume = tmp_path / "q.nii.gz"
    data = np.random.default_rng(0).normal(0, 300, (32, 32, 12)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 3.0, 1.0])), volume)
    assert len(searcher.search(Query(image=volume), k=3).hits) == 3
    store.close()
