"""During ingest, each case's report becomes graph edges: its findings (with status) and its diagnosis.

Findings come from the report's findings and impression sections; diagnoses are the concepts stated
present in its diagnosis section. The history section is left out: it tells why the study was done,
not what the images show. Edges are written before the case is committed to the case store, so a
crash in between leaves a case that the rerun rewrites, never a stored case without its findings.

The graph also records, per index, which version of its case store it reflects: one node
`(:IndexState {index, store, generation, pending, written, commits})`, where `store` names the store
(its creation time: a rebuilt or recreated index is another store) and `generation` is the store's
write counter (`CaseStore.generation()`). The rule the writers keep is that when the node says
generation G, the graph holds exactly the cases the store held at G, except for the `pending` ids:

- `record(cases)` writes the node with `pending` = those ids and `written` false, then the findings,
  then `written` true. A crash in between leaves them marked as possibly half-written.
- Once written, pending cases that were not in the store yet (`commits`) are expected to arrive in the
  store's next write, the ingest's commit of that batch: the graph is then in step at G + 1 if every
  pending case is in the store. Pending cases already in the store (a backfill) keep it in step at G.
- `forget(case_ids)` (after the store deleted them) marks the node stale, deletes, and records the
  store's generation again only if the graph's cases are then exactly the store's.

Anything else leaves the node stale (no generation; cases whose write may have been cut short stay
listed as pending, not written), and `indexing.graph_sync.reconcile` brings the graph back in step
with the store, the source of truth. The node is written in its own queries around the findings'
ones; the AOF (and a snapshot) keeps writes in order, so a server that lost its last writes lost the
node's later states with them and never claims more than it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from kgreport.json_types import JsonObject
from kgreport.knowledge.archive import CaseFindings, delete_cases, write_cases
from kgreport.knowledge.extraction.extractor import FindingExtractor
from kgreport.knowledge.graph.backend import GraphBackend
from kgreport.retrieval.manifest import IndexManifest
from kgreport.retrieval.records import Case, StoredCase

_KNOWN_CASES = "MATCH (k:Case {index: $index}) RETURN k.id AS id"
_READ_STATE = (
    "MATCH (s:IndexState {index: $index}) RETURN s.store AS store, s.generation AS generation, "
    "s.pending AS pending, s.written AS written, s.commits AS commits"
)
_WRITE_STATE = (
    "MERGE (s:IndexState {index: $index}) SET s.store = $store, s.generation = $generation, "
    "s.pending = $pending, s.written = $written, s.commits = $commits"
)


class StoreView(Protocol):
    """What the recorder and the reconcile read of a case store (`retrieval.stores.local.store.CaseStore`)."""

    def generation(self) -> int: ...

    def case_ids(self) -> set[str]: ...

    def get_case(self, case_id: str) -> StoredCase | None: ...


def store_identity(store: StoreView) -> str:
    """Which store this is: its creation time, so a rebuilt or deleted-and-recreated index (whose
    generation counts from 0 again) never passes for the one the graph last reflected."""
    manifest = getattr(store, "manifest", None)
    return str(manifest.created or "") if isinstance(manifest, IndexManifest) else ""


@dataclass(frozen=True)
class GraphState:
    """What the graph says of one index: the store version it reflects (see the module docstring)."""

    store: str
    generation: int | None  # None: unknown, reconcile before trusting the graph
    pending: tuple[str, ...] = ()
    written: bool = True  # the pending cases' findings were written completely
    commits: bool = False  # some pending cases were not in the store yet: its next write commits them

    def params(self, index: str) -> JsonObject:
        return {
            "index": index,
            "store": self.store,
            "generation": self.generation,
            "pending": list(self.pending),
            "written": self.written,
            "commits": self.commits,
        }


def observed_text(case: Case) -> str:
    """The part of a report that describes the images."""
    return "\n".join(x for x in (case.report.findings, case.report.impression) if x.strip())


class FindingRecorder:
    """Writes the findings of the cases of one index into the graph; given the index's `store`, it
    also keeps the graph's record of which store version it reflects (see the module docstring)."""

    def __init__(
        self, extractor: FindingExtractor, graph: GraphBackend, index: str, *, store: StoreView | None = None
    ) -> None:
        self.extractor = extractor
        self.graph = graph
        self.index = index
        self.store = store

    def case_findings(self, cases: Sequence[Case]) -> list[CaseFindings]:
        texts = [observed_text(c) for c in cases] + [c.report.diagnosis for c in cases]
        extracted = self.extractor.extract_many(texts)
        observed, diagnosed = extracted[: len(cases)], extracted[len(cases) :]
        return [
            CaseFindings(
                case_id=case.case_id,
                findings=tuple((f.concept_id, f.status) for f in findings),
                diagnoses=tuple(f.concept_id for f in diagnosis if f.status == "present"),
            )
            for case, findings, diagnosis in zip(cases, observed, diagnosed, strict=True)
        ]

    def record(self, cases: Sequence[Case]) -> int:
        """Extract and write, keeping the graph's store version; returns the number of finding edges written."""
        if not cases:
            return 0
        findings = self.case_findings(cases)  # before any write: extraction is the slow part
        ids = tuple(dict.fromkeys(c.case_id for c in cases))
        state = self.read_state()
        base = self.in_step_generation(self.store, state) if self.store is not None else None
        if base is None:  # not in step (or no store to be in step with): a reconcile will compare them
            carried = uncertain_cases(state)
            self.write_state(GraphState(self._identity(), None, tuple(dict.fromkeys(carried + ids)), written=False))
            sent = write_cases(self.graph, self.index, findings)
            self.write_state(GraphState(self._identity(), None, carried, written=not carried))
            return sent
        assert self.store is not None
        commits = any(self.store.get_case(case_id) is None for case_id in ids)
        self.write_state(GraphState(self._identity(), base, ids, written=False, commits=commits))
        sent = write_cases(self.graph, self.index, findings)
        self.write_state(GraphState(self._identity(), base, ids, written=True, commits=commits))
        return sent

    def write_findings(self, cases: Sequence[Case]) -> int:
        """Extract and write, leaving the store version to the caller (the reconcile)."""
        return write_cases(self.graph, self.index, self.case_findings(cases)) if cases else 0

    def recorded_case_ids(self) -> set[str]:
        return {str(row["id"]) for row in self.graph.run(_KNOWN_CASES, {"index": self.index})}

    def forget(self, case_ids: Sequence[str]) -> None:
        """Delete these cases' findings; call it after the store deleted the cases. The graph is in step
        afterwards if its cases are then exactly the store's (two id reads: deletes are rare)."""
        if not case_ids:
            return
        carried = uncertain_cases(self.read_state())
        self.write_state(GraphState(self._identity(), None, carried, written=not carried))
        self.delete_findings(case_ids)
        if self.store is not None and not carried:
            generation = self.store.generation()
            if self.recorded_case_ids() == self.store.case_ids():
                self.write_state(GraphState(self._identity(), generation))

    def delete_findings(self, case_ids: Sequence[str]) -> None:
        """Delete these cases' findings, leaving the store version to the caller (the reconcile)."""
        delete_cases(self.graph, self.index, case_ids)

    # -- which store version the graph reflects -----------------------------------------------------
    def read_state(self) -> GraphState | None:
        rows = self.graph.run(_READ_STATE, {"index": self.index})
        if not rows:
            return None
        row = rows[0]
        generation = row["generation"]
        return GraphState(
            store=str(row["store"] or ""),
            generation=int(generation) if generation is not None else None,
            pending=tuple(str(x) for x in row["pending"] or ()),
            written=bool(row["written"]),
            commits=bool(row["commits"]),
        )

    def write_state(self, state: GraphState) -> None:
        self.graph.run(_WRITE_STATE, state.params(self.index))

    def _identity(self) -> str:
        return store_identity(self.store) if self.store is not None else ""

    def in_step_generation(self, store: StoreView, state: GraphState | None) -> int | None:
        """The store generation the graph (whose `state` was just read) reflects exactly right now, or
        None if that is not known without comparing them (a few small store reads)."""
        if state is None or state.generation is None or state.store != store_identity(store):
            return None
        return _in_step(state, store, store.generation())


def uncertain_cases(state: GraphState | None) -> tuple[str, ...]:
    """Cases whose findings write may have been cut short (replayed by the next reconcile)."""
    return state.pending if state is not None and not state.written else ()


def _in_step(state: GraphState, store: StoreView, generation: int) -> int | None:
    """`generation` if the graph described by `state` (with a known generation) holds exactly the
    store's cases at it, else None (the rules are in the module docstring)."""
    assert state.generation is not None
    if not state.pending:
        return generation if generation == state.generation else None
    if not state.written:
        return None
    allowed = (state.generation, state.generation + 1) if state.commits else (state.generation,)
    if generation not in allowed:
        return None
    return generation if all(store.get_case(case_id) is not None for case_id in state.pending) else None
