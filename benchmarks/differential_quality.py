"""Differential ablation: each source alone, fixed blends, and the per-case blend, on hand-written notes.

Reads what `benchmarks.differential_sources` collected (train and dev), fits the per-case source weights
on train (`generator.source_weights`), and scores on dev, in two modes:

- notes: image votes, notes-text votes and the knowledge base's ranking of the notes' findings;
- image only: image votes and the knowledge base's ranking of the findings the similar cases agree on.

A differential is right at k when one of its first k names is the true diagnosis or an accepted synonym,
strictly (`benchmarks.notes_scoring.names_diagnosis`: the name equals or contains an accepted name as a
whole phrase; a knowledge-base item's synonyms count as its names). The accepted names of a dev case were
written by hand with its notes; train cases use the case's own diagnosis (shortened). A ranked name that
contradicts a stated negative (the name contains the term or a synonym of a fact the dev notes state
absent, by the hand-written facts, not by the system's own rule) is counted and listed. 95 % bootstrap
intervals resample cases. The per-case blend ships (`--save`) only if, on dev, its top 5 is at least the
best fixed blend's.

    python -m kgreport.benchmarks.differential_quality [--save]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from kgreport.benchmarks.differential_sources import NOTES
from kgreport.benchmarks.notes_quality import load_notes
from kgreport.benchmarks.notes_scoring import names_diagnosis
from kgreport.benchmarks.results_io import RESULTS, write_result
from kgreport.generator.config import WriterConfig
from kgreport.generator.differential import (
    CaseDiagnosis,
    DifferentialItem,
    SourceVotes,
    case_votes,
    fuse,
    knowledge_votes,
)
from kgreport.generator.notes_findings import contradicts_negatives, stated_findings
from kgreport.generator.source_weights import FixedWeights, SourceWeights, Weigher, fit_source_weights
from kgreport.knowledge.extraction.notes_items import split_items
from kgreport.knowledge.ontology.diagnosis_kb import read_diagnosis_kb
from kgreport.knowledge.ontology.diagnosis_ranking import DiagnosisRanker, StatedFinding

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "data" / "models" / "report-writer" / "source_weights.json"
CASES_PER_SOURCE = 10  # of the 20 collected: as the writer's config votes
GRID = [w / 10 for w in range(11)]
ZERO_WEIGHT_BIAS = -30.0  # a source weighted 0: exp(-30) of the others


def _cases(hits: Sequence[Sequence[Any]]) -> list[CaseDiagnosis]:
    return [CaseDiagnosis(str(c), float(s), str(d)) for c, s, d in hits[:CASES_PER_SOURCE]]


def right(name: str, synonyms: Sequence[str], truth: Sequence[str]) -> bool:
    """Strictly the true diagnosis: the name or a synonym names an accepted name (`names_diagnosis`)."""
    return any(names_diagnosis(n, truth) for n in (name, *synonyms))


def case_sources(
    row: Mapping[str, Any], note: Mapping[str, Any], ranker: DiagnosisRanker, mode: str
) -> list[SourceVotes]:
    """The case's votes as the writer builds them (`ReportWriter.differential`)."""
    if mode == "notes":
        stated = stated_findings(split_items(note["notes"], note["modality"]))
    else:
        stated = [StatedFinding(t, s) for t, s in row["case_findings"]]
    ranked = ranker.rank(stated, modality=row["modality"], region=row["region"])
    votes = [case_votes("image", _cases(row["image_hits"])), knowledge_votes(ranked)]
    if mode == "notes":
        votes.insert(1, case_votes("text", _cases(row["text_hits"])))
    return votes


def truth_shares(votes: Sequence[SourceVotes], truth: Sequence[str]) -> dict[str, float]:
    out = {}
    for v in votes:
        out[v.source] = sum(
            share
            for name, share in v.shares.items()
            if right(name, v.ranked[name].synonyms if name in v.ranked else (), truth)
        )
    return out


def _contradicting(item: DifferentialItem, facts: Sequence[Mapping[str, Any]]) -> bool:
    """The name shown (not the synonyms it was merged under) contains a denied fact's term or synonym."""
    return any(f["status"] == "absent" and right(item.name, (), [f["term"], *f.get("synonyms", [])]) for f in facts)


def evaluate(rows: Sequence[Mapping[str, Any]], sources: Sequence[list[SourceVotes]], weigh: Weigher,
             notes: Mapping[str, Mapping[str, Any]], mode: str) -> dict[str, Any]:  # fmt: skip
    top1, top5, contradicting, weights = [], [], [], []
    for row, votes in zip(rows, sources, strict=True):
        w = weigh(votes)
        note = notes.get(row["case_id"])
        items = split_items(note["notes"], note["modality"]) if mode == "notes" and note else []
        # As the writer does: a diagnosis the notes deny is not offered.
        denied = partial(contradicts_negatives, items=items)
        ranked = fuse(votes, w, limit=WriterConfig.differential_size, denied=denied)
        hits = [right(d.name, d.synonyms, row["truth"]) for d in ranked]
        top1.append(any(hits[:1]))
        top5.append(any(hits))
        weights.append(w)
        if note and mode == "notes":
            contradicting += [[row["case_id"], d.name] for d in ranked if _contradicting(d, note.get("facts", []))]
    return {
        "top1": round(statistics.mean(top1), 4),
        "top1_ci": _interval(top1),
        "top5": round(statistics.mean(top5), 4),
        "top5_ci": _interval(top5),
        "contradicting": contradicting,
        "median_weights": {s: round(statistics.median(w.get(s, 0.0) for w in weights), 3) for s in weights[0]}
        if weights
        else {},
    }


def _interval(hits: Sequence[bool], resamples: int = 2000, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    means = sorted(statistics.mean(rng.choices(hits, k=len(hits))) for _ in range(resamples))
    return [round(means[int(0.025 * resamples)], 4), round(means[int(0.975 * resamples) - 1], 4)]


def _grid(names: Sequence[str]) -> list[dict[str, float]]:
    out = []
    for combo in itertools.product(GRID, repeat=len(names) - 1):
        if sum(combo) <= 1.0 + 1e-9:
            out.append(dict(zip(names, (*combo, round(1.0 - sum(combo), 2)), strict=True)))
    return out


def _log(w: float) -> float:
    return round(math.log(w), 4) if w > 0 else ZERO_WEIGHT_BIAS


def _mode_blends(image_only: Mapping[str, float], notes: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Coefficients giving `image_only`'s weights without notes and `notes`'s with them (softmax of the bias,
    plus the `notes` signal's coefficient when notes are given)."""
    out = {}
    for source in notes:
        bias = _log(image_only.get(source, 0.0)) if source in image_only else 0.0
        out[source] = {"bias": bias, "notes": round(_log(notes[source]) - bias, 4)}
    return out


def main() -> None:  # noqa: PLR0915 (one linear script: fit, ablate, print and write)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", action="store_true", help=f"write the fitted weights to {WEIGHTS}")
    args = parser.parse_args()
    kb = read_diagnosis_kb()
    ranker = DiagnosisRanker(kb)
    data = {s: json.loads((RESULTS / f"differential_sources_{s}.json").read_text())["rows"] for s in ("train", "dev")}
    notes = {s: {r["case_id"]: r for r in load_notes(NOTES[s])} for s in data}
    result: dict[str, Any] = {"cases": {s: len(r) for s, r in data.items()}, "modes": {}}
    by_mode, rank_ms = {}, {}
    for mode in ("notes", "image"):
        started = time.perf_counter()
        by_mode[mode] = {
            s: [case_sources(r, notes[s][r["case_id"]], ranker, mode) for r in rows] for s, rows in data.items()
        }
        rank_ms[mode] = 1000 * (time.perf_counter() - started) / sum(len(r) for r in data.values())
    # One fit for both modes: the writer uses one set of weights, whichever sources vote.
    per_case = fit_source_weights(
        [
            (v, truth_shares(v, r["truth"]))
            for m in by_mode.values()
            for v, r in zip(m["train"], data["train"], strict=True)
        ],
        fitted_on="benchmarks/results/differential_sources_train.json: 150 hand-written train notes, both modes",
    )
    shipped: dict[str, Any] = {}
    for mode, sources in by_mode.items():

        def run(
            split: str, weigh: Weigher, sources: dict[str, list[list[SourceVotes]]] = sources, mode: str = mode
        ) -> dict[str, Any]:
            return evaluate(data[split], sources[split], weigh, notes[split], mode)

        names = [v.source for v in sources["dev"][0]]
        runs = {f"{name} alone": run("dev", FixedWeights({name: 1.0})) for name in names}
        grid = {json.dumps(w): w for w in _grid(names)}
        on_train = {k: run("train", FixedWeights(w)) for k, w in grid.items()}
        best_train = max(on_train, key=lambda k: (on_train[k]["top5"], on_train[k]["top1"]))
        runs["fixed blend chosen on train " + best_train] = run("dev", FixedWeights(grid[best_train]))
        on_dev = {k: run("dev", FixedWeights(w)) for k, w in grid.items()}
        best_dev = max(on_dev, key=lambda k: (on_dev[k]["top5"], on_dev[k]["top1"]))
        runs["best fixed blend on dev " + best_dev] = on_dev[best_dev]
        runs["per-case blend"] = run("dev", per_case)
        ships = runs["per-case blend"]["top5"] >= on_dev[best_dev]["top5"]
        shipped[mode] = (ships, grid[best_dev])
        result["modes"][mode] = {
            "runs": runs,
            "per_case_ships": ships,
            "knowledge_ranking_ms_per_case": round(rank_ms[mode], 2),
        }
        for label, r in runs.items():
            print(f"{mode:6} {label:60} top1 {r['top1']:.3f} top5 {r['top5']:.3f} {r['top5_ci']} "
                  f"contradicting {len(r['contradicting'])} weights {r['median_weights']}")  # fmt: skip
        print(f"{mode}: per-case blend ships: {ships}")
    result["per_case_coefficients"] = per_case.coefficients
    if all(ships for ships, _ in shipped.values()):
        chosen = per_case
    else:  # the best fixed blend of each mode, as biases and a notes signal: fixed weights per mode
        chosen = SourceWeights(_mode_blends(shipped["image"][1], shipped["notes"][1]), fitted_on=(
            f"fixed blends best on dev: image only {json.dumps(shipped['image'][1])}, notes "
            f"{json.dumps(shipped['notes'][1])}; the per-case blend did not beat them"))  # fmt: skip
    result["shipped"] = {
        "coefficients": chosen.coefficients,
        "fitted_on": chosen.fitted_on,
        "dev": {m: evaluate(data["dev"], v["dev"], chosen, notes["dev"], m) for m, v in by_mode.items()},
    }
    for mode, r in result["shipped"]["dev"].items():
        print(
            f"shipped, {mode}: top1 {r['top1']:.3f} top5 {r['top5']:.3f} {r['top5_ci']} "
            f"contradicting {r['contradicting']}"
        )
    write_result(RESULTS / "differential_quality.json", result)
    if args.save:
        chosen.save(WEIGHTS)
        print(f"wrote {WEIGHTS}")


if __name__ == "__main__":
    main()
