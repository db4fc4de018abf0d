"""What durable graph writes cost: the embedded FalkorDB with snapshots only vs AOF everysec vs AOF always.

Three servers side by side in one run, each in a fresh data dir holding the same synthetic ontology
(`--concepts` concepts, snapshotted first). The workload is what ingest sends to the graph:
`FindingRecorder.record` over batches of cases, each case with 3 findings and 1 diagnosis (what a
MedPix report states on average, benchmarks/results/knowledge_speed.json), including the recorder's
two store-version writes per batch, then a (simulated) store commit. Two batch sizes: 16 cases (an
archive build, `ingest_batch_cases`) and 1 case (one case added through the API). Extraction is
replaced by the precomputed findings, so the figures are graph writes only. Modes take turns within
each repeat; medians over `--repeats`.

Then each server is killed with SIGKILL and restarted: how many acknowledged cases it lost, and how
long the restart took (an AOF is replayed).

Usage: python -m kgreport.benchmarks.graph_durability [--cases 1600] [--single 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from kgreport.benchmarks.results_io import RESULTS, write_result
from kgreport.indexing.case_findings import FindingRecorder
from kgreport.knowledge.extraction.extractor import Finding
from kgreport.knowledge.graph.falkordb_embedded import EmbeddedFalkorDB
from kgreport.retrieval.manifest import IndexManifest
from kgreport.retrieval.records import Case, CaseImage, ReportSections, StoredCase

MODES: dict[str, str | None] = {"rdb_only": None, "aof_everysec": "everysec", "aof_always": "always"}


class _PrecomputedFindings:
    """Stands in for the extractor: text "c:<n>" states concept n (findings), "d:<n>" its diagnosis."""

    def __init__(self, concepts: int) -> None:
        self.concepts = concepts

    def extract_many(self, texts: Iterable[str], batch_size: int = 32) -> list[list[Finding]]:
        out = []
        for text in texts:
            kind, _, n = text.partition(":")
            seed = int(n)
            ids = [(seed * 7 + k * 131) % self.concepts for k in (range(3) if kind == "c" else range(1))]
            statuses = ("present", "absent", "uncertain")
            out.append([Finding(f"RID{i}", f"c{i}", "x", 0, 1, statuses[k % 3]) for k, i in enumerate(ids)])
        return out


class _MemoryStore:
    """A case store's version and case ids, in memory: `commit` is the ingest's store write."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self._generation = 0
        self.manifest = IndexManifest(1, 1, "none", "none", created="benchmark")

    def generation(self) -> int:
        return self._generation

    def case_ids(self) -> set[str]:
        return set(self.ids)

    def get_case(self, case_id: str) -> StoredCase | None:
        return StoredCase(case_id, None, None, None, {}, "", {}, ()) if case_id in self.ids else None

    def commit(self, cases: Sequence[Case]) -> None:
        self.ids.update(c.case_id for c in cases)
        self._generation += 1


def _cases(prefix: str, n: int, start: int) -> list[Case]:
    image = (CaseImage(image_id="i", path=Path("/nonexistent.png")),)
    return [
        Case(
            case_id=f"{prefix}{start + i}",
            images=image,
            report=ReportSections(findings=f"c:{start + i}", diagnosis=f"d:{start + i}"),
        )
        for i in range(n)
    ]


def _start(folder: Path, appendfsync: str | None, concepts: int) -> EmbeddedFalkorDB:
    graph = EmbeddedFalkorDB(folder, appendfsync=appendfsync)
    graph.create_indexes()
    rows = [{"id": f"RID{i}"} for i in range(concepts)]
    graph.run_batched("UNWIND $rows AS row MERGE (:Concept {id: row.id})", rows)
    graph.persist()  # every mode starts from the same snapshot
    return graph


def _write(recorder: FindingRecorder, store: _MemoryStore, cases: list[Case], batch: int) -> float:
    """Record `cases` in batches, each followed by its store commit; cases per second."""
    started = time.perf_counter()
    for i in range(0, len(cases), batch):
        chunk = cases[i : i + batch]
        recorder.record(chunk)
        store.commit(chunk)
    return len(cases) / (time.perf_counter() - started)


def _kill_and_restart(graph: EmbeddedFalkorDB, index: str) -> tuple[int, float]:
    """SIGKILL the server, then time the restart up to its first answer; cases of `index` it still holds."""
    pid = graph.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    started = time.perf_counter()
    rows = graph.run("MATCH (k:Case {index: $index}) RETURN count(k) AS n", {"index": index})
    return int(rows[0]["n"]), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1600, help="cases per repeat, in batches of 16")
    parser.add_argument("--single", type=int, default=200, help="cases per repeat, one per record()")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concepts", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=RESULTS / "graph_durability.json")
    args = parser.parse_args()

    rates: dict[str, dict[str, list[float]]] = {m: {"batch16": [], "batch1": []} for m in MODES}
    outcome: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        graphs = {mode: _start(Path(tmp) / mode, fsync, args.concepts) for mode, fsync in MODES.items()}
        extractor = _PrecomputedFindings(args.concepts)
        stores = {mode: _MemoryStore() for mode in MODES}
        recorders = {
            mode: FindingRecorder(extractor, graphs[mode], "bench", store=stores[mode])  # type: ignore[arg-type]
            for mode in MODES
        }
        written = 0
        for repeat in range(args.repeats):
            order = list(MODES)[repeat % len(MODES) :] + list(MODES)[: repeat % len(MODES)]
            bulk, single = _cases("b", args.cases, written), _cases("s", args.single, written)
            written += max(args.cases, args.single)
            for mode in order:
                rates[mode]["batch16"].append(_write(recorders[mode], stores[mode], bulk, 16))
                rates[mode]["batch1"].append(_write(recorders[mode], stores[mode], single, 1))
            done = ", ".join(f"{m} {rates[m]['batch16'][-1]:.0f}" for m in MODES)
            print(f"repeat {repeat + 1}/{args.repeats}, cases/s in batches of 16: {done}")
        for mode, graph in graphs.items():
            acknowledged = len(stores[mode].ids)
            kept, restart = _kill_and_restart(graph, "bench")
            outcome[mode] = {
                "acknowledged_cases": acknowledged,
                "cases_after_kill_9": kept,
                "lost_on_kill_9": acknowledged - kept,
                "restart_seconds": round(restart, 3),
            }
            graph.close()

    result: dict[str, Any] = {"cases_per_repeat": {"batch16": args.cases, "batch1": args.single}}
    result["repeats"] = args.repeats
    result["modes"] = {}
    base = {k: statistics.median(v) for k, v in rates["rdb_only"].items()}
    for mode in MODES:
        medians = {k: statistics.median(v) for k, v in rates[mode].items()}
        result["modes"][mode] = {
            "appendfsync": MODES[mode],
            "cases_per_second_batch16": round(medians["batch16"], 1),
            "cases_per_second_batch1": round(medians["batch1"], 1),
            "ms_per_record_batch16": round(16_000 / medians["batch16"], 2),
            "ms_per_record_batch1": round(1000 / medians["batch1"], 2),
            "relative_to_rdb_only_batch16": round(medians["batch16"] / base["batch16"], 3),
            "relative_to_rdb_only_batch1": round(medians["batch1"] / base["batch1"], 3),
            "runs_batch16": [round(r, 1) for r in rates[mode]["batch16"]],
            "runs_batch1": [round(r, 1) for r in rates[mode]["batch1"]],
            **outcome[mode],
        }
    print(f"{'mode':14} {'cases/s (16)':>13} {'cases/s (1)':>12} {'ms/record(1)':>13} {'lost on kill -9':>16}")
    for mode, row in result["modes"].items():
        print(
            f"{mode:14} {row['cases_per_second_batch16']:>13} {row['cases_per_second_batch1']:>12} "
            f"{row['ms_per_record_batch1']:>13} {row['lost_on_kill_9']:>16}"
        )
    write_result(args.out, result)


if __name__ == "__main__":
    main()
