"""Shared fixtures: where the real data lives, and an isolated data dir per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from knowledge.extraction.extractor import FindingExtractor
    from knowledge.graph import GraphBackend

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
DEMO_ARCHIVE = REPO / "data" / "demo"
SHARED_MEDPIX = REPO.parent / "shared" / "data" / "medpix2"


@pytest.fixture
def demo_archive() -> Path:
    return DEMO_ARCHIVE


@pytest.fixture
def medpix_root() -> Path:
    """The full MedPix 2.0 train/dev data beside the repository (CI has it), else the bundled demo."""
    return SHARED_MEDPIX if (SHARED_MEDPIX / "data_train.jsonl").is_file() else DEMO_ARCHIVE


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty KGREPORT_DATA_DIR for the test, and fresh settings."""
    from api.settings import get_settings

    monkeypatch.setenv("KGREPORT_DATA_DIR", str(tmp_path / "kg"))
    get_settings.cache_clear()
    yield tmp_path / "kg"
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def extractor(tmp_path_factory: pytest.TempPathFactory) -> FindingExtractor:
    """The real extractor over the bundled ontology, built once per test session."""
    from knowledge.extraction.extractor import FindingExtractor
    from knowledge.extraction.lexicon import build_lexicon

    folder = REPO / "data" / "ontology"
    lexicon = build_lexicon(folder / "radlex.csv.gz", folder / "finding_models.jsonl.gz")
    return FindingExtractor(lexicon, tmp_path_factory.mktemp("extractor-cache"))


@pytest.fixture(scope="session")
def full_graph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GraphBackend]:
    """Embedded FalkorDB holding the whole bundled ontology (about 5 s to load), shared by the session."""
    from knowledge.graph import open_graph
    from knowledge.ontology.loader import load_ontology

    folder = REPO / "data" / "ontology"
    backend = open_graph(tmp_path_factory.mktemp("full-graph"))
    load_ontology(backend, folder / "radlex.csv.gz", folder / "finding_models.jsonl.gz")
    yield backend
    backend.close()
