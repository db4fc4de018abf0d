"""The writer on hand-written radiologist notes (and image-only drafts) of MedPix dev, scored by rules.

Each case of `data/notes/dev.jsonl` (notes typed by hand the way radiologists type them, with the key facts a
report must state: `data/notes/README.md`) is sent through the writer as `kgreport report IMAGE --notes`
runs it, against an index of MedPix train; the same image is then drafted from the image alone. Both are
scored by `benchmarks.notes_scoring`, which uses no project model: fact recall, side kept, numbers kept,
negation flips, Findings words per notes word, truncated sentences, the true diagnosis in the top 5 of the
differential, and (image only) sentences stating another patient's measurement, age, sex or diagnosis.
Image-only drafts are also scored by RadLex finding F1 (our extractor's, on the reference report) against
copying the nearest case. 95 % intervals come from a bootstrap over cases.

Usage: python -m kgreport.benchmarks.notes_quality --index medpix-train [--generator DIR] [--limit N] [--label after]
       python -m kgreport.benchmarks.notes_quality --rescore   (the stored runs scored again by the current rules)
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from kgreport.benchmarks.notes_scoring import CaseScore, Fact, score_case, summary
from kgreport.benchmarks.report_metrics import finding_f1, plain
from kgreport.benchmarks.results_io import RESULTS, write_result
from kgreport.generator.pipeline import ReportGenerationError
from kgreport.generator.refine import choose_draft
from kgreport.generator.report import Report
from kgreport.generator.training import reference_report
from kgreport.indexing.archives import open_archive
from kgreport.retrieval.records import Case
from kgreport.usecases.reporting import open_report_writer
from kgreport.usecases.services import Services
from kgreport.usecases.settings import Settings

REPO = Path(__file__).resolve().parents[1]
NOTES = REPO / "data" / "notes" / "dev.jsonl"


def load_notes(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def bootstrap(scores: Sequence[CaseScore], metric: Callable[[Sequence[CaseScore]], float | None],
              resamples: int = 2000, seed: int = 0) -> list[float]:  # fmt: skip
    """95 % interval of a pooled metric, resampling cases."""
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        sample = [scores[rng.randrange(len(scores))] for _ in scores]
        value = metric(sample)
        if value is not None:
            values.append(value)
    values.sort()
    if not values:
        return []
    return [round(values[int(0.025 * len(values))], 4), round(values[int(0.975 * len(values)) - 1], 4)]


def with_intervals(scores: Sequence[CaseScore]) -> dict[str, Any]:
    out = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary(scores).items()}
    for key in ("fact_recall", "side_kept", "median_words_ratio", "diagnosis_top5"):
        out[f"{key}_ci"] = bootstrap(scores, partial(_pooled, key=key))
    return out


def _pooled(scores: Sequence[CaseScore], key: str) -> float | None:
    value = summary(scores)[key]
    return None if value is None else float(value)


def _sentences(report: Report) -> tuple[list[str], str, list[str]]:
    # A differential item is known by its name and its synonyms (strict matching: `names_diagnosis`).
    names = [" / ".join([d.name, *d.synonyms]) for d in report.differential]
    return [s.sentence for s in report.findings], report.impression, names


def rescore(path: Path, notes: Path) -> None:
    """Score every stored run's notes-mode reports again with the current rules (a run measured before a
    scoring rule changed stays comparable without writing its reports again); timings are kept."""
    rows = {r["case_id"]: r for r in load_notes(notes)}
    runs = json.loads(path.read_text())["runs"]
    for label, run in runs.items():
        scores = []
        for example in run["examples"]:
            row = rows[example["case_id"]]
            score = score_case(
                facts=[Fact.from_json(f) for f in row["facts"]],
                notes=row["notes"],
                findings=example["findings"],
                impression=example["impression"],
                differential=example["differential"],
                diagnosis_names=row["diagnosis_names"],
            )
            example.update(missed=score.missed, flipped=score.flipped, truncated=score.truncated_sentences)
            scores.append(score)
        run["notes_mode"] = with_intervals(scores)
        print(label, json.dumps({k: v for k, v in run["notes_mode"].items() if not k.endswith("_ci")}))
    write_result(path, {"runs": runs})


def main() -> None:  # noqa: PLR0915 (one linear script: measure, then print and write)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default="medpix-train", help="index built from the train split")
    parser.add_argument("--archive", type=Path, default=REPO.parent / "shared" / "data" / "medpix2")
    parser.add_argument("--notes", type=Path, default=NOTES)
    parser.add_argument("--generator", type=Path, default=None, help="refiner folder (default: bundled)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--label", default="current", help="name of this run in the results file")
    parser.add_argument("--no-llm", action="store_true", help="notes mode without the refiner (items written out)")
    parser.add_argument("--skip-image", action="store_true", help="notes mode only")
    parser.add_argument("--out", type=Path, default=RESULTS / "notes_quality.json")
    parser.add_argument("--rescore", action="store_true", help="score the stored runs again; run nothing")
    args = parser.parse_args()
    if args.rescore:
        rescore(args.out, args.notes)
        return

    services = Services(Settings())
    writer = open_report_writer(services, args.index, args.generator)
    if args.no_llm:
        writer = replace(writer, config=replace(writer.config, notes_with_llm=False))
    cases = {c.case_id: c for c in open_archive(args.archive, None, split="dev") if isinstance(c, Case)}
    rows = load_notes(args.notes)[: args.limit]

    notes_scores: list[CaseScore] = []
    image_scores: list[CaseScore] = []
    seconds: dict[str, list[float]] = {"notes": [], "notes_differential": [], "image": []}
    examples: list[dict[str, Any]] = []
    references, drafts, copies, drafted = [], [], [], 0
    for row in rows:
        case = cases[row["case_id"]]
        image = next(i for i in case.images if i.image_id == row["image"] or i.path.stem == row["image"])
        facts = [Fact.from_json(f) for f in row["facts"]]
        started = time.perf_counter()
        report = writer.write(image.path, row["notes"])
        seconds["notes"].append(time.perf_counter() - started)
        seconds["notes_differential"].append(writer.stages.get("differential", 0.0))
        findings, impression, differential = _sentences(report)
        score = score_case(facts=facts, notes=row["notes"], findings=findings, impression=impression,
                           differential=differential, diagnosis_names=row["diagnosis_names"])  # fmt: skip
        notes_scores.append(score)

        drafted_report: Report | None = None
        image_score = CaseScore()
        if not args.skip_image:
            started = time.perf_counter()
            try:
                drafted_report = writer.write(image.path)
            except ReportGenerationError:
                drafted_report = None
            seconds["image"].append(time.perf_counter() - started)
        if drafted_report is not None and not drafted_report.abstained:
            drafted += 1
            d_findings, d_impression, d_differential = _sentences(drafted_report)
            image_score = score_case(facts=[], notes="", findings=d_findings, impression=d_impression,
                                     differential=d_differential, diagnosis_names=row["diagnosis_names"],
                                     image_only=True)  # fmt: skip
            found = writer.evidence.for_image(image.path)
            references.append(plain(reference_report(case, image, writer.config)))
            drafts.append(plain(drafted_report.as_text().split("\nDifferential:")[0]))
            copies.append(plain(choose_draft(found, writer.config, None).candidates[0].text) if found.hits else "")
        image_scores.append(image_score)
        examples.append({
            "case_id": row["case_id"], "notes": row["notes"], "findings": findings, "impression": impression,
            "differential": differential[:5], "missed": score.missed, "flipped": score.flipped,
            "truncated": score.truncated_sentences, "removed": report.removed,
            "image_only": None if drafted_report is None else {
                "abstained": drafted_report.abstained, "findings": [s.sentence for s in drafted_report.findings],
                "impression": drafted_report.impression, "foreign": image_score.foreign_sentences,
                "truncated": image_score.truncated_sentences},
        })  # fmt: skip
        print(f"{row['case_id']}: recall {score.recalled}/{score.facts} flips {score.negation_flips} "
              f"ratio {score.words_ratio:.2f} {seconds['notes'][-1]:.2f}s")  # fmt: skip

    notes_summary = with_intervals(notes_scores)
    image_summary = summary(image_scores)
    extractor = services.finding_extractor
    if drafts:
        f1_draft, f1_copy = finding_f1(extractor, references, drafts), finding_f1(extractor, references, copies)
        image_summary.update(drafted=drafted, finding_f1_drafted=round(f1_draft["mean"], 4),
                             finding_f1_copy_nearest=round(f1_copy["mean"], 4))  # fmt: skip
    result = {
        "label": args.label,
        "cases": len(rows),
        "notes_mode": notes_summary,
        "image_only": image_summary,
        "seconds": {
            k: {"p50": round(statistics.median(v), 3), "p95": round(sorted(v)[int(0.95 * (len(v) - 1))], 3)}
            for k, v in seconds.items()
            if v
        },  # fmt: skip
        "writer": writer.model_info,
        "examples": examples,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "examples"}, indent=2))
    runs = json.loads(args.out.read_text()).get("runs", {}) if args.out.is_file() else {}
    runs[args.label] = result
    write_result(args.out, {"runs": runs})


if __name__ == "__main__":
    main()
