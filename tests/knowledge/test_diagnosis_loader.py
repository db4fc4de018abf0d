"""The finding → diagnosis knowledge base in each graph backend: loaded whole, idempotent, with provenance."""

from kgreport.knowledge.graph.backend import GraphBackend
from kgreport.knowledge.ontology.diagnosis_kb import DiagnosisKB, diagnosis_key, finding_key, read_diagnosis_kb
from kgreport.knowledge.ontology.diagnosis_loader import (
    ensure_diagnosis_kb,
    fingerprint,
    load_diagnosis_kb,
    loaded_fingerprint,
    read_diagnosis_kb_from_graph,
)
from kgreport.knowledge.ontology.diagnosis_ranking import DiagnosisRanker, StatedFinding

SUGGESTED = (
    "MATCH (f:KbFinding {key: $finding})-[r:SUGGESTS]->(d:Diagnosis) "
    "RETURN d.name AS diagnosis, d.synonyms AS synonyms, r.source AS source, r.modalities AS modalities, "
    "r.pathognomonic AS pathognomonic, f.specificity AS specificity ORDER BY d.key, r.source"
)


def test_the_whole_knowledge_base_loads_and_a_second_load_changes_nothing(empty_graph: GraphBackend) -> None:
    kb = read_diagnosis_kb()
    first = load_diagnosis_kb(empty_graph)
    assert first.kb_findings == len({finding_key(s.finding) for s in kb.suggestions})
    assert first.diagnoses == len(kb.diagnoses)
    assert first.suggests == len(
        {(finding_key(s.finding), diagnosis_key(s.diagnosis), s.source) for s in kb.suggestions}
    )
    again = load_diagnosis_kb(empty_graph)
    assert (again.kb_findings, again.diagnoses, again.suggests) == (first.kb_findings, first.diagnoses, first.suggests)

    rows = empty_graph.run(SUGGESTED, {"finding": "apple core constricting lesion"})
    crc = [r for r in rows if r["diagnosis"].lower().startswith("colorectal cancer")]
    assert crc and crc[0]["synonyms"] == ["CRC"] and "CT" in crc[0]["modalities"]
    assert crc[0]["source"] == "radiology-semantic-dict:imaging_findings"
    generic = empty_graph.run(SUGGESTED, {"finding": "restricted diffusion"})
    assert len({r["diagnosis"] for r in generic}) > 50 and generic[0]["specificity"] < 0.05


def test_the_ranker_reads_the_knowledge_base_back_from_the_graph(empty_graph: GraphBackend) -> None:
    assert not read_diagnosis_kb_from_graph(empty_graph).suggestions  # nothing loaded: nothing read
    empty_graph.run("CREATE (:Concept {id: 'RID_ACH', name: 'achalasia', source: 'radlex'})")
    empty_graph.run("CREATE (:Concept {id: 'OIFM_X', name: 'Other', synonyms: ['Pulmonary Embolism']})")
    kb = ensure_diagnosis_kb(empty_graph)  # loads it first
    links = empty_graph.run("MATCH (d:Diagnosis)-[r:SAME_AS]->(c:Concept) RETURN d.key AS d, c.id AS c, r.method AS m")
    assert {(r["d"], r["c"], r["m"]) for r in links} >= {("achalasia", "RID_ACH", "name")}
    assert any(r["c"] == "OIFM_X" and r["m"] == "synonym" for r in links)
    assert kb.diagnoses["achalasia"].concept_id == "RID_ACH"
    tables = read_diagnosis_kb()
    assert len(kb.diagnoses) == len(tables.diagnoses)
    assert len(kb.suggestions) == len(
        {(finding_key(s.finding), diagnosis_key(s.diagnosis), s.source) for s in tables.suggestions}
    )
    stated = [StatedFinding("apple-core constricting lesion of the sigmoid colon")]
    from_graph = DiagnosisRanker(kb).rank(stated, modality="CT")
    from_tables = DiagnosisRanker(tables).rank(stated, modality="CT")
    assert from_graph[0].name == from_tables[0].name and from_graph[0].name.lower().startswith("colorectal cancer")
    achalasia = DiagnosisRanker(kb).rank([StatedFinding("dilated esophagus"), StatedFinding("bird's beak sign")])
    assert achalasia[0].name == "Achalasia" and achalasia[0].concept_id == "RID_ACH"


def test_a_load_of_other_tables_leaves_nothing_of_the_old_ones(empty_graph: GraphBackend) -> None:
    tables = read_diagnosis_kb()
    old = DiagnosisKB(
        tables.suggestions[:50],
        {diagnosis_key(s.diagnosis): tables.diagnoses[diagnosis_key(s.diagnosis)] for s in tables.suggestions[:50]},
    )
    load_diagnosis_kb(empty_graph, old)
    assert loaded_fingerprint(empty_graph) == fingerprint(old)
    kept = read_diagnosis_kb_from_graph(empty_graph)
    assert len(kept.diagnoses) == len(old.diagnoses)
    ensure_diagnosis_kb(empty_graph)  # the package's tables differ: the old copy is replaced, not added to
    assert loaded_fingerprint(empty_graph) == fingerprint(tables)
    again = read_diagnosis_kb_from_graph(empty_graph)
    assert len(again.diagnoses) == len(tables.diagnoses)
    small = DiagnosisKB(
        tables.suggestions[:1],
        {
            diagnosis_key(tables.suggestions[0].diagnosis): tables.diagnoses[
                diagnosis_key(tables.suggestions[0].diagnosis)
            ]
        },
    )
    load_diagnosis_kb(empty_graph, small)
    assert len(read_diagnosis_kb_from_graph(empty_graph).suggestions) == 1
