"""RadLex + finding models into a real embedded FalkorDB: the bundled files, idempotence, edges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kgreport.knowledge.graph import open_graph
from kgreport.knowledge.ontology.loader import load_ontology, ontology_counts
from kgreport.knowledge.ontology.sources import read_finding_models, read_radlex

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "data" / "ontology"


def test_bundled_sources_are_complete() -> None:
    terms = list(read_radlex(BUNDLED / "radlex.csv.gz"))
    assert len(terms) == 45468 and terms[0].rid.startswith("RID")
    models = list(read_finding_models(BUNDLED / "finding_models.jsonl.gz"))
    assert len(models) == 2382
    appendicitis = next(m for m in models if m.name == "Acute Appendicitis")
    assert "RID168" in appendicitis.anatomy_rids


def test_small_ontology_load_is_idempotent(tmp_path: Path) -> None:
    radlex = tmp_path / "radlex.csv"
    radlex.write_text(
        "anatomical entity,RID3,RID1\nlung,RID1301,RID3\nright lung,RID1302,RID1301\nnodule,RID3875,RID1\nbroken row\n"
    )
    models = [
        {
            "oifm_id": "OIFM_1",
            "name": "Lung Nodule",
            "synonyms": ["pulmonary nodule"],
            "description": "x",
            "index_codes": [{"system": "RADLEX", "code": "RID1301"}],
            "attributes": [{"name": "location", "values": [{"name": "right lung"}, {"name": "elsewhere"}]}],
        },
        {"oifm_id": "OIFM_2", "name": "nodule", "attributes": []},
    ]
    fm = tmp_path / "fm.jsonl"
    fm.write_text("".join(json.dumps(m) + "\n" for m in models))
    graph = open_graph(tmp_path / "data")
    first = load_ontology(graph, radlex, fm)
    second = load_ontology(graph, radlex, fm)
    expected = {
        "concepts": 6,
        "finding_models": 2,
        "is_a": 2,
        "same_as": 1,
        "located_in": 2,
        "related_to": 0,
        "cases": 0,
    }
    assert ontology_counts(graph) == expected
    assert first.radlex_concepts == second.radlex_concepts == 4
    rows = graph.run(
        "MATCH (f:Finding {id: $id})-[:LOCATED_IN]->(l) RETURN l.name AS name ORDER BY name", {"id": "OIFM_1"}
    )
    assert [r["name"] for r in rows] == ["lung", "right lung"]
    parents = graph.run("MATCH (:Concept {id: 'RID1302'})-[:IS_A*]->(p) RETURN p.id AS id ORDER BY id")
    assert [r["id"] for r in parents] == ["RID1301", "RID3"]
    graph.close()


@pytest.mark.slow
def test_full_ontology_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kgreport.api.cli import app
    from kgreport.usecases.settings import get_settings

    monkeypatch.setenv("KGREPORT_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    runner = CliRunner()
    loaded = runner.invoke(app, ["kg", "load"])
    assert loaded.exit_code == 0, loaded.output
    summary = json.loads(loaded.stdout)
    assert summary["radlex_concepts"] == 45468 and summary["finding_models"] == 2382
    assert summary["is_a_edges"] > 45000 and summary["located_in_edges"] > 100 and summary["related_to_edges"] > 50
    assert summary["diagnosis_kb"]["suggests"] > 8000 and summary["diagnosis_kb"]["diagnoses"] > 1500
    info = json.loads(runner.invoke(app, ["kg", "info"]).stdout)
    assert info["concepts"] == 45468 + 2382 and info["backend"] == "falkordb"
    grounded = runner.invoke(app, ["kg", "ground", "RID1301", "RID0", "--json"])
    lines = [json.loads(line) for line in grounded.stdout.splitlines()]
    assert lines[0]["name"] == "lung" and any(a["name"] == "anatomical entity" for a in lines[0]["ancestors"])
    assert lines[1]["reason"] == "unknown concept id 'RID0'"
    neo = runner.invoke(app, ["kg", "info", "--backend", "neo4j"])
    assert neo.exit_code == 2 and "KGREPORT_NEO4J_URI" in neo.output
    get_settings.cache_clear()
