"""A small real ontology in embedded FalkorDB, for the knowledge tests."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kgreport.knowledge.graph import GraphBackend, open_graph
from kgreport.knowledge.ontology.loader import load_ontology

SMALL_RADLEX = (
    "anatomical entity,RID3,RID1\nlung,RID1301,RID3\nright lung,RID1302,RID1301\n"
    "clinical finding,RID5,RID1\nmass,RID3874,RID5\nnodule,RID3875,RID5\n"
    "pleural effusion,RID4872,RID5\nlung cancer,RID4000,RID5\n"
)
SMALL_FINDING_MODELS = [
    {"oifm_id": "OIFM_N", "name": "nodule", "index_codes": [{"system": "RADLEX", "code": "RID1301"}]},
    {"oifm_id": "OIFM_M", "name": "Lung Mass", "attributes": [{"name": "location", "values": [{"name": "lung"}]}]},
    {
        "oifm_id": "OIFM_E",
        "name": "pleural effusion",
        "attributes": [{"name": "associated findings", "values": [{"name": "pulmonary nodule"}]}],
    },
    {
        "oifm_id": "OIFM_C",
        "name": "bronchogenic carcinoma",
        "synonyms": ["lung cancer"],
        "tags": ["diagnosis"],
        "index_codes": [{"system": "RADLEX", "code": "RID1301"}],
    },
    {"oifm_id": "OIFM_P", "name": "pulmonary nodule", "attributes": []},
]


NEO4J_URI = os.environ.get("KGREPORT_NEO4J_URI")
BACKENDS = [
    "falkordb",
    "falkordb-server",
    pytest.param(
        "neo4j",
        marks=pytest.mark.skipif(
            not NEO4J_URI,
            reason="no Neo4j server here: set KGREPORT_NEO4J_URI (+ _USER, _PASSWORD, _DATABASE) to a throwaway "
            "database to run (the tests clear it)",
        ),
    ),
]


def open_backend(name: str, folder: Path, request: pytest.FixtureRequest) -> GraphBackend:
    """The embedded FalkorDB of `folder`, the session's FalkorDB server, or the Neo4j database the
    environment names; the shared ones emptied first."""
    if name == "falkordb":
        return open_graph(folder)
    if name == "falkordb-server":
        server = request.getfixturevalue("falkordb_server")
        backend = open_graph(folder, falkordb_url=server.url, falkordb_password=server.password)
    else:
        backend = open_graph(
            folder,
            neo4j_uri=NEO4J_URI,
            neo4j_user=os.environ.get("KGREPORT_NEO4J_USER", "neo4j"),
            neo4j_password=os.environ.get("KGREPORT_NEO4J_PASSWORD", ""),
            neo4j_database=os.environ.get("KGREPORT_NEO4J_DATABASE") or None,
        )
    backend.run("MATCH (n) DETACH DELETE n")
    return backend


@pytest.fixture(params=BACKENDS)
def empty_graph(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GraphBackend]:
    """An empty graph with its indexes, in each graph backend."""
    backend = open_backend(request.param, tmp_path / "data", request)
    backend.create_indexes()
    yield backend
    if request.param != "falkordb":
        backend.run("MATCH (n) DETACH DELETE n")
    backend.close()


@pytest.fixture(params=BACKENDS)
def small_graph(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GraphBackend]:
    """A hand-written eight-term RadLex and five finding models, in each graph backend."""
    radlex = tmp_path / "radlex.csv"
    radlex.write_text(SMALL_RADLEX)
    fm = tmp_path / "fm.jsonl"
    fm.write_text("".join(json.dumps(m) + "\n" for m in SMALL_FINDING_MODELS))
    backend = open_backend(request.param, tmp_path / "data", request)
    load_ontology(backend, radlex, fm)
    yield backend
    if request.param != "falkordb":
        backend.run("MATCH (n) DETACH DELETE n")
    backend.close()
