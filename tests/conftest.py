"""Shared fixtures: where the real data lives, and an isolated data dir per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from kgreport.knowledge.extraction.extractor import FindingExtractor
    from kgreport.knowledge.graph import GraphBackend
    from kgreport.testkit.graph_server import FalkorDBServerProcess
    from kgreport.testkit.milvus_server import MilvusUnderTest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
DEMO_ARCHIVE = REPO / "data" / "demo"
SHARED_MEDPIX = REPO.parent / "shared" / "data" / "medpix2"


# Fixtures that start a server process of someone else's (Milvus, Orthanc, a FalkorDB server): a test using
# one is marked `server`, and `make test-fast` leaves those out (the embedded FalkorDB stays: it is the default).
SERVER_FIXTURES = {"milvus", "falkordb_server", "pacs", "server"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) or "falkordb-server" in params.values():
            item.add_marker(pytest.mark.server)


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
    from kgreport.usecases.settings import get_settings

    monkeypatch.setenv("KGREPORT_DATA_DIR", str(tmp_path / "kg"))
    get_settings.cache_clear()
    yield tmp_path / "kg"
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def extractor(tmp_path_factory: pytest.TempPathFactory) -> FindingExtractor:
    """The real extractor over the bundled ontology, built once per test session."""
    from kgreport.knowledge.extraction.extractor import FindingExtractor
    from kgreport.knowledge.extraction.lexicon import build_lexicon

    folder = REPO / "data" / "ontology"
    lexicon = build_lexicon(folder / "radlex.csv.gz", folder / "finding_models.jsonl.gz")
    return FindingExtractor(lexicon, tmp_path_factory.mktemp("extractor-cache"))


@pytest.fixture(scope="session")
def full_graph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GraphBackend]:
    """Embedded FalkorDB holding the whole bundled ontology (about 5 s to load), shared by the session."""
    from kgreport.knowledge.graph import open_graph
    from kgreport.knowledge.ontology.loader import load_ontology

    folder = REPO / "data" / "ontology"
    backend = open_graph(tmp_path_factory.mktemp("full-graph"))
    load_ontology(backend, folder / "radlex.csv.gz", folder / "finding_models.jsonl.gz")
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 64-wide Llama (random weights) saved as a local model folder with SmolLM2's real tokenizer:
    the report writer's code paths in seconds, not minutes."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from kgreport.generator.llm import smollm2_gguf

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=0.3,  # room for confident logits over a 49k vocabulary in 64 dims
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-llm")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusUnderTest]:
    """One real Milvus server for the session: two embedded servers cannot run side by side (their
    etcd takes port 2380), and a start takes several seconds. Tests that stop it start it again."""
    from kgreport.testkit.milvus_server import running_milvus

    with running_milvus(tmp_path_factory.mktemp("milvus")) as server:
        yield server


@pytest.fixture(scope="session")
def falkordb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FalkorDBServerProcess]:
    """A FalkorDB server on a loopback port, shared by the session (graph tests empty it first)."""
    from kgreport.testkit.graph_server import running_falkordb_server

    with running_falkordb_server(tmp_path_factory.mktemp("falkordb-server")) as server:
        yield server
