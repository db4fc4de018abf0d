"""Bring an index's findings in the graph back in step with its case store, the source of truth.

The graph can lag its store: a process killed between its graph write and its store commit, a graph
write lost with the graph server (a machine crash under `appendfsync everysec`, or a `kill -9` of a
server that only took snapshots), a store write whose graph write failed or was never made (a delete
that removed the findings itself, not through the recorder). The graph records which store version it reflects
(`indexing.case_findings`); `reconcile` reads that record and, when the store has moved on (or the
record is absent or stale), compares the index's cases in the graph with the store's:

- cases in the graph that the store no longer holds are forgotten;
- stored cases the graph does not hold are recorded (their reports read back from the store);
- cases whose findings write was cut short (pending, not written) are recorded again;

then it records the store's generation. A case the store replaced since the graph's version, whose
new findings write was lost, is not detected (the store cannot say cheaply which cases changed): with
the embedded server's default `appendfsync always` no acknowledged write is lost, and the one write a
crash can cut short is the pending one, which is replayed.

When the graph is in step it is one small graph query and a few small store reads (the generation,
and the pending cases of the last ingest batch), and writes nothing. Run it with the index's write
lock held (as `usecases.ingest` does around `Services.finding_recorder`), so no ingest is between its
graph write and its store commit meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from kgreport.indexing.case_findings import FindingRecorder, GraphState, StoreView, store_identity, uncertain_cases
from kgreport.json_types import JsonObject
from kgreport.retrieval.records import Case

log = logging.getLogger(__name__)
RECORD_BATCH = 64  # cases per record() while catching up


@dataclass(frozen=True)
class ReconcileResult:
    """What `reconcile` did for one index."""

    index: str
    generation: int  # the store generation the graph reflects now
    previous: int | None  # the one it said it reflected before (None: absent or stale)
    added: tuple[str, ...] = ()  # stored cases whose findings were missing, now recorded
    removed: tuple[str, ...] = ()  # cases the store no longer holds, forgotten
    replayed: tuple[str, ...] = ()  # cases whose findings write was cut short, recorded again
    wrote: bool = False  # whether anything was written to the graph

    @property
    def changed(self) -> bool:
        """Whether the graph's cases or findings changed (not just its record of the store version)."""
        return bool(self.added or self.removed or self.replayed)

    def as_json(self) -> JsonObject:
        return {
            "index": self.index,
            "generation": self.generation,
            "previous": self.previous,
            "added": len(self.added),
            "removed": len(self.removed),
            "replayed": len(self.replayed),
            "wrote": self.wrote,
        }


def reconcile(store: StoreView, recorder: FindingRecorder) -> ReconcileResult:
    """Make the graph's cases of `recorder.index` exactly `store`'s, and record the store generation."""
    state = recorder.read_state()
    identity = store_identity(store)
    previous = state.generation if state is not None and state.store == identity else None
    in_step = recorder.in_step_generation(store, state)
    if in_step is not None:  # the state stays as it is: it says the same as long as the store does not move
        return ReconcileResult(recorder.index, in_step, previous)

    generation = store.generation()
    uncertain = set(uncertain_cases(state))
    stored, recorded = store.case_ids(), recorder.recorded_case_ids()
    removed = sorted(recorded - stored)
    added = sorted(stored - recorded)
    replayed = sorted((uncertain & stored) - set(added))
    # Until the end, every case about to be written is pending, not written: cut short, the next
    # reconcile writes them all again (a missing case half-written would otherwise pass for recorded).
    if added or replayed or removed:
        recorder.write_state(GraphState(identity, None, (*added, *replayed, *removed), written=False))
    for batch in _batches(_stored_cases(store, [*added, *replayed]), RECORD_BATCH):
        recorder.write_findings(batch)
    if removed:
        recorder.delete_findings(removed)
    recorder.write_state(GraphState(identity, generation))
    result = ReconcileResult(
        recorder.index, generation, previous, tuple(added), tuple(removed), tuple(replayed), wrote=True
    )
    if result.changed:
        log.warning(
            "graph of index %r was behind its store (generation %s, store at %s): recorded %d missing cases, "
            "forgot %d deleted ones, replayed %d cut short",
            recorder.index,
            previous,
            generation,
            len(added),
            len(removed),
            len(replayed),
        )
    return result


def _stored_cases(store: StoreView, case_ids: Iterable[str]) -> Iterator[Case]:
    """The stored cases of these ids, as far as their reports go (images are not needed for findings)."""
    for case_id in case_ids:
        stored = store.get_case(case_id)
        if stored is not None:  # deleted meanwhile
            yield stored.to_case()


def _batches(items: Iterable[Case], size: int) -> Iterator[Sequence[Case]]:
    batch: list[Case] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
