"""The searcher's options on a real store with hand-placed vectors: query expansion, the per-case vote,
the encoder's heads in the predicted labels, and bad option values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kgreport.retrieval.config import SearchConfig
from kgreport.retrieval.imaging import DecodedImage
from kgreport.retrieval.records import Case, CaseImage, ReportSections, SearchResult
from kgreport.retrieval.search import CaseSearcher, Query, expand_query
from kgreport.retrieval.stores.local.store import CaseStore

DIM, TEXT_DIM = 4, 3


class HeadsOnly:
    """An image encoder that only classifies (queries arrive embedded): its heads say Thorax, surely."""

    name, dim = "heads-only", DIM

    def classify(self, vectors: np.ndarray) -> dict[str, list[dict[str, float]]]:
        return {"body_region": [{"Thorax": 0.95, "Head": 0.05}] * len(vectors)}


def _unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def _store(tmp_path: Path, layout: dict[str, tuple[str, list[np.ndarray]]]) -> CaseStore:
    """One case per entry: its body region and its images' vectors."""
    store = CaseStore.create(tmp_path / "idx", image_dim=DIM, text_dim=TEXT_DIM, image_encoder="t", text_encoder="t")
    items = []
    for case_id, (region, vectors) in layout.items():
        images = tuple(
            CaseImage(
                image_id=f"{case_id}/{j}",
                path=Path(f"/a/{case_id}_{j}.jpg"),
                modality="CT",
                body_region=region,
                metadata={"location": f"{region}, fine"},
            )
            for j in range(len(vectors))
        )
        case = Case(case_id, images, ReportSections(findings=f"case {case_id}"), modality="CT", body_region=region)
        items.append((case, {img.image_id: v for img, v in zip(images, vectors, strict=True)}, _unit(1, 0, 0)))
    store.add_cases(items)
    return store


def _result(store: CaseStore, query: np.ndarray, reported_only: bool = False, **options: object) -> SearchResult:
    config = SearchConfig(leakage_guard=False, **options)  # type: ignore[arg-type]
    searcher = CaseSearcher(store, HeadsOnly(), None, config)  # type: ignore[arg-type]
    decoded = DecodedImage(pixels=np.zeros((4, 4), np.float32), kind="image", source="q.png")
    return searcher.search(Query(image=Path("q.png")), k=3, embedded=(query, decoded), reported_only=reported_only)


def _search(store: CaseStore, query: np.ndarray, **options: object) -> tuple[list[str], str | None]:
    result = _result(store, query, **options)
    return [h.case_id for h in result.hits], result.predicted.body_region


def test_expand_query_moves_the_query_towards_its_best_neighbours() -> None:
    query = _unit(1, 0, 0, 0)
    vectors = np.stack([_unit(1, 1, 0, 0), _unit(0, 0, 0, 1)])
    expanded = expand_query(query, vectors, vectors @ query, 1)
    assert np.isclose(np.linalg.norm(expanded), 1.0)
    assert expanded @ vectors[0] > query @ vectors[0]  # towards the best neighbour ...
    assert np.isclose(expanded @ vectors[1], 0.0, atol=1e-6)  # ... and not towards the one left out


def test_query_expansion_lets_agreeing_neighbours_overtake_a_lone_look_alike(tmp_path: Path) -> None:
    store = _store(
        tmp_path,
        {
            "lone": ("Head", [_unit(1, 0, 0.55, 0)]),  # alone on its side of the query
            "a": ("Thorax", [_unit(1, 0.6, 0, 0)]),
            "b": ("Thorax", [_unit(1, 0.65, 0, 0)]),
            "c": ("Thorax", [_unit(1, 0.7, 0, 0)]),
        },
    )
    query = _unit(1, 0, 0, 0)
    plain, _ = _search(store, query)
    expanded, _ = _search(store, query, query_expansion=3)
    assert plain[0] == "lone"
    assert expanded[0] == "a" and "lone" not in expanded
    store.close()


def test_the_case_vote_counts_a_case_of_many_images_once(tmp_path: Path) -> None:
    near = [_unit(1, 0.1 * j, 0, 0) for j in range(4)]
    store = _store(
        tmp_path,
        {
            "many": ("Head", near),  # four close images of one case
            "x": ("Thorax", [_unit(1, 0.5, 0, 0)]),
            "y": ("Thorax", [_unit(1, 0.55, 0, 0)]),
        },
    )
    query = _unit(1, 0, 0, 0)
    assert _search(store, query)[1] == "Head"
    assert _search(store, query, vote_by="case")[1] == "Thorax"
    # The fine location is voted by the same neighbours, from the images' stored metadata.
    assert _result(store, query).predicted.location == "Head, fine"
    located = _result(store, query, vote_by="case")
    assert located.predicted.location == "Thorax, fine" and 0.5 < located.predicted.location_confidence < 1
    assert located.hits[0].location == "Head, fine"
    store.close()


def test_the_heads_weigh_in_on_the_predicted_region(tmp_path: Path) -> None:
    store = _store(tmp_path, {"h1": ("Head", [_unit(1, 0, 0, 0)]), "h2": ("Head", [_unit(1, 0.1, 0, 0)])})
    query = _unit(1, 0, 0, 0)
    assert _search(store, query)[1] == "Head"
    assert _search(store, query, head_weight=0.3)[1] == "Head"  # 0.7 · 1.0 against 0.3 · 0.95
    assert _search(store, query, head_weight=0.6)[1] == "Thorax"
    store.close()


def test_case_pooling_ranks_a_consistent_case_above_one_lucky_image(tmp_path: Path) -> None:
    store = _store(
        tmp_path,
        {
            "lucky": ("Head", [_unit(1, 0.05, 0, 0), _unit(0, 0, 1, 0)]),  # one image close, one far off
            "steady": ("Thorax", [_unit(1, 0.3, 0, 0), _unit(1, 0.35, 0, 0)]),  # both fairly close
        },
    )
    query = _unit(1, 0, 0, 0)
    assert _search(store, query)[0] == ["lucky", "steady"]
    pooled = _result(store, query, case_pooling=True)
    assert [h.case_id for h in pooled.hits] == ["steady", "lucky"]
    assert pooled.hits[1].image_id == "lucky/0"  # a case is shown by its best image
    mean = _unit(1, 0.3, 0, 0) + _unit(1, 0.35, 0, 0)
    assert pooled.hits[0].score == pytest.approx(float(mean @ query / np.linalg.norm(mean)), abs=1e-5)
    assert pooled.predicted == _result(store, query).predicted  # the per-image vote keeps the images' own scores
    store.close()


def test_reported_only_leaves_image_only_cases_out_of_the_ranking_and_the_vote(tmp_path: Path) -> None:
    """The nearest case has no report: an image query finds it (report ""); `reported_only` (what the report
    writer asks for) ranks and votes among the cases with a report only."""
    store = _store(tmp_path, {"a": ("Thorax", [_unit(1, 0.3, 0, 0)]), "b": ("Thorax", [_unit(1, 0.4, 0, 0)])})
    image = CaseImage("pacs/0", Path("/a/pacs_0.jpg"), modality="CT", body_region="Head")
    store.add_cases([(Case("pacs", (image,), ReportSections()), {"pacs/0": _unit(1, 0, 0, 0)}, np.zeros(TEXT_DIM))])
    query = _unit(1, 0, 0, 0)
    found = _result(store, query)
    assert [h.case_id for h in found.hits] == ["pacs", "a", "b"] and found.hits[0].report == ""
    reported = _result(store, query, reported_only=True)
    assert [h.case_id for h in reported.hits] == ["a", "b"] and all(h.report for h in reported.hits)
    assert found.predicted.body_region_confidence < 1 and reported.predicted.body_region_confidence == 1
    store.close()


@pytest.mark.parametrize(("option", "value"), [("vote_by", "patient"), ("query_expansion", -1), ("head_weight", 1.5)])
def test_bad_option_values_are_refused(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=option):
        SearchConfig(**{option: value})  # type: ignore[arg-type]
