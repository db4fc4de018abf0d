"""Speed of the knowledge layer on the embedded FalkorDB: ontology load, archive findings, grounding.

- Full ontology load (RadLex 45k terms + 2,382 finding models) into a fresh graph, and the same load
  again over the loaded graph (idempotent MERGE); median of `--repeats` fresh loads.
- Archive findings: every MedPix train case's report through the extractor and into the graph as
  HAS_FINDING / HAS_DIAGNOSIS edges (what `kgreport index build` adds per case), cases per second.
- Grounding: for each MedPix dev case, the distinct concepts its findings text states, topped up or
  cut to `--findings` (default 8) concepts from the most frequent archive concepts so every report
  weighs the same; `ground_findings` per report, p50 / p95 over all dev cases, graph statistics over
  the train archive just written. Extraction time is not in this figure (see extraction_quality).

Usage: python -m kgreport.benchmarks.knowledge_speed [--medpix ../shared/data/medpix2] [--findings 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from kgreport.benchmarks.results_io import RESULTS, write_result
from kgreport.indexing.archives.medpix import MedPixArchive
from kgreport.indexing.case_findings import FindingRecorder, observed_text
from kgreport.knowledge.extraction.extractor import Finding, FindingExtractor
from kgreport.knowledge.extraction.lexicon import build_lexicon
from kgreport.knowledge.graph import open_graph
from kgreport.knowledge.grounding import ground_findings
from kgreport.knowledge.ontology.loader import load_ontology
from kgreport.retrieval.records import Case

REPO = Path(__file__).resolve().parents[1]
ONTOLOGY = REPO / "data" / "ontology"
INDEX = "bench-train"


def _cases(root: Path, split: str) -> list[Case]:
    return [c for c in MedPixArchive(root, split) if isinstance(c, Case)]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--medpix", type=Path, default=REPO.parent / "shared" / "data" / "medpix2")
    parser.add_argument("--findings", type=int, default=8, help="concepts per grounded report")
    parser.add_argument("--repeats", type=int, default=3, help="fresh ontology loads")
    parser.add_argument("--out", type=Path, default=RESULTS / "knowledge_speed.json")
    args = parser.parse_args()
    radlex, models = ONTOLOGY / "radlex.csv.gz", ONTOLOGY / "finding_models.jsonl.gz"

    with tempfile.TemporaryDirectory() as tmp:
        loads = []
        for i in range(args.repeats):
            graph = open_graph(Path(tmp) / f"load{i}")
            graph.run("RETURN 1")  # server start is not part of the load
            loads.append(load_ontology(graph, radlex, models))
            if i < args.repeats - 1:
                graph.close()
        reload = load_ontology(graph, radlex, models)
        print(f"ontology load: {[round(s.seconds, 2) for s in loads]} s fresh, {reload.seconds:.2f} s again")

        started = time.perf_counter()
        extractor = FindingExtractor(build_lexicon(radlex, models), Path(tmp) / "cache")
        extractor_load = time.perf_counter() - started
        train, dev = _cases(args.medpix, "train"), _cases(args.medpix, "dev")
        recorder = FindingRecorder(extractor, graph, INDEX)
        started = time.perf_counter()
        edges = sum(recorder.record(train[i : i + 16]) for i in range(0, len(train), 16))
        record_seconds = time.perf_counter() - started
        print(f"archive findings: {len(train)} train cases, {edges} edges in {record_seconds:.1f} s")

        frequent = [
            str(r["id"])
            for r in graph.run(
                "MATCH (k:Case {index: $index})-[:HAS_FINDING {status: 'present'}]->(c:Concept) "
                "RETURN c.id AS id, count(k) AS n ORDER BY n DESC, id LIMIT $n",
                {"index": INDEX, "n": args.findings},
            )
        ]
        timings, stated = [], []
        for findings in extractor.extract_many([observed_text(c) for c in dev]):
            ids = list(dict.fromkeys(f.concept_id for f in findings))
            stated.append(len(ids))
            chosen = (ids + [c for c in frequent if c not in ids])[: args.findings]
            statuses = {f.concept_id: f.status for f in findings}
            report = [Finding(c, c, c, 0, 0, statuses.get(c, "present")) for c in chosen]
            started = time.perf_counter()
            grounded = ground_findings(graph, report, index=INDEX)
            timings.append((time.perf_counter() - started) * 1000)
            assert len(grounded.concepts) == len(chosen)
        graph.close()

    result: dict[str, Any] = {
        "backend": "falkordb (embedded, unix socket)",
        "ontology_load_seconds": {
            "fresh_median": round(statistics.median(s.seconds for s in loads), 2),
            "fresh_runs": [round(s.seconds, 2) for s in loads],
            "reload_over_loaded_graph": round(reload.seconds, 2),
            "counts": loads[-1].as_json(),
            "target_seconds": 60,
        },
        "archive_findings": {
            "cases": len(train),
            "edges": edges,
            "seconds": round(record_seconds, 2),
            "cases_per_second": round(len(train) / record_seconds, 2),
            "extractor_load_seconds": round(extractor_load, 2),
        },
        "grounding_ms_per_report": {
            "reports": len(timings),
            "concepts_per_report": args.findings,
            "concepts_stated_by_dev_reports_median": statistics.median(stated),
            "p50": round(statistics.median(timings), 2),
            "p95": round(_percentile(timings, 0.95), 2),
            "max": round(max(timings), 2),
            "target_p50": 20,
        },
    }
    g = result["grounding_ms_per_report"]
    print(
        f"grounding ({args.findings} concepts/report, {len(timings)} dev reports): p50 {g['p50']} ms, p95 {g['p95']} ms"
    )
    write_result(args.out, result)


if __name__ == "__main__":
    main()
