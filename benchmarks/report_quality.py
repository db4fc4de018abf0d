"""Report quality on MedPix dev against an index of MedPix train: both modes of the refiner, baselines, ablations.

Each dev case contributes its first readable image; its reference is what the refiner is trained to write
(`generator.training.reference_report`: caption and findings, then impression or diagnosis).

Mode 1, the image alone (systems scored on the whole report):
- `copy`: the nearest retrieved case's report; `consensus`: the candidate the others agree with most;
  `image_text`: the candidate whose caption the CT encoder's text tower puts closest to the image;
- `full`: the refiner as `kgreport report` runs it (draft chosen by the writer config, LLM edit, post-check);
- ablations of `full`: `no_graph` (no ontology facts in the prompt), `fixed_gate` (gate pinned at 0.5),
  `no_image` (gate pinned at 0: the fusion sees no image evidence), and `draft_checked`: the chosen draft
  through the same post-check, no LLM.
The abstention threshold is not applied here: every query gets a report, and the coverage against quality
curve shows what each threshold would keep.

Mode 2, the radiologist's notes (scored on the Findings against the reference's findings): the notes are
simulated from the extractor's findings of each reference (`generator.notes.simulate_notes`: shorthand,
reordered, words dropped), never its text. Notes made from the extractor's output and scored by the same
extractor measure the extractor against itself: this mode checks that the pipeline runs and does not regress,
and is not evidence of quality (`benchmarks.notes_quality` measures notes mode on notes written by hand).
`notes_verbatim` returns the notes as typed; `notes_expanded` the
notes with shorthand expanded (no LLM); `notes_checked` is the notes-mode pipeline without the LLM (the expanded
notes as the findings, checked and completed, `WriterConfig.notes_with_llm` off); `notes_full` is the refiner. The
differential's recall of the true
diagnosis at 1 and 5 is compared for: the writer's blend and each source alone (image votes, notes-text votes,
the knowledge base's ranking); `benchmarks.differential_quality` measures it on hand-written notes.

Metrics: BLEU, METEOR, ROUGE-L, CIDEr (pycocoevalcap), RadLex finding F1 (our extractor's), the share of
findings sentences stating a present finding that the evidence does not support (fewer than `min_votes`
retrieved cases state it; for the notes, neither notes nor cases), and for `full` that share before the
post-check removed them. Paired bootstrap 95 % intervals throughout.

Usage: python -m kgreport.benchmarks.report_quality --index medpix-train [--generator DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from kgreport.benchmarks.report_metrics import (
    coverage_curve,
    finding_f1,
    language_scores,
    paired_bootstrap,
    plain,
    roc_auc,
    spearman,
    spread,
)
from kgreport.benchmarks.results_io import RESULTS, write_result
from kgreport.generator.confidence import USABLE_F1
from kgreport.generator.differential import recall_at
from kgreport.generator.evidence import ImageEvidence
from kgreport.generator.notes import prepare_notes, simulate_notes
from kgreport.generator.notes_findings import stated_findings
from kgreport.generator.pipeline import ReportGenerationError, ReportWriter
from kgreport.generator.refine import choose_draft
from kgreport.generator.report import cite, split_sections
from kgreport.generator.source_weights import FixedWeights, Weigher
from kgreport.generator.training import reference_report
from kgreport.indexing.archives import open_archive
from kgreport.knowledge.extraction.notes_items import split_items
from kgreport.retrieval.records import Case
from kgreport.usecases.reporting import open_report_writer
from kgreport.usecases.services import Services
from kgreport.usecases.settings import Settings

REPO = Path(__file__).resolve().parents[1]
IMAGE_SYSTEMS = ("full", "no_graph", "fixed_gate", "no_image", "draft_checked")
# The differential: the writer's own weights (None), and each source alone.
DIFFERENTIAL_RUNS: dict[str, Weigher | None] = {
    "full": None,
    "image_vote": FixedWeights({"image": 1.0}),
    "text_vote": FixedWeights({"text": 1.0}),
    "knowledge": FixedWeights({"knowledge": 1.0}),
}
SELECTIONS = {"copy": "top1", "consensus": "consensus", "image_text": "image_text"}  # drafts without the LLM
SELECTION_OF = {v: k for k, v in SELECTIONS.items()}


def _cases(archive: Path, split: str) -> list[Case]:
    return [c for c in open_archive(archive, None, split=split) if isinstance(c, Case)]


def findings_of(text: str) -> str:
    try:
        return split_sections(text)[0]
    except ValueError:
        return ""


def variants(writer: ReportWriter) -> dict[str, ReportWriter]:
    """The refiner and its ablations; none abstains (the curve shows what a threshold would keep)."""
    full = replace(writer, config=replace(writer.config, abstain_below=None))
    return {
        "draft_checked": replace(full, config=replace(full.config, refine_with_llm=False)),
        "full": full,
        "no_graph": replace(full, evidence=replace(full.evidence, graph=None)),
        "fixed_gate": replace(full, fixed_gate=0.5),
        "no_image": replace(full, fixed_gate=0.0),
    }


def unsupported_share(
    writer: ReportWriter, text: str, found: ImageEvidence, min_votes: int, supported: list[str]
) -> float:
    sentences = cite(
        findings_of(text), found.evidence, writer.evidence.extractor, supported_concepts=supported, min_votes=min_votes
    )
    return sum(not s.supported for s in sentences) / len(sentences) if sentences else 0.0


def score_table(
    extractor: Any, references: list[str], outputs: dict[str, list[str]]
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, list[float]]]]:
    table, each = {}, {}
    refs = [plain(r) for r in references]
    for name, texts in outputs.items():
        hyps = [plain(t) for t in texts]
        scores = language_scores(refs, hyps)
        f1 = finding_f1(extractor, refs, hyps)
        table[name] = {
            m: round(s, 4) for m, (s, _) in scores.items() if m in ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
        }
        table[name].update(
            finding_f1=round(f1["mean"], 4),
            finding_micro_f1=round(f1["micro_f1"], 4),
            mean_words=round(statistics.mean(len(h.split()) for h in hyps), 1),
        )
        each[name] = {"CIDEr": scores["CIDEr"][1], "finding_f1": f1["each"]}
    return table, each


def main() -> None:  # noqa: PLR0915 (one linear script: measure, then print and write)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default="medpix-train", help="index built from the train split")
    parser.add_argument("--archive", type=Path, default=REPO.parent / "shared" / "data" / "medpix2")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--generator", type=Path, default=None, help="refiner folder (default: bundled)")
    parser.add_argument("--limit", type=int, default=None, help="first N dev cases")
    parser.add_argument("--systems", default=",".join([*IMAGE_SYSTEMS, "notes"]), help="LLM systems to run")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "report_quality.json")
    args = parser.parse_args()
    wanted = {s for s in args.systems.split(",") if s}

    services = Services(Settings())
    writer = open_report_writer(services, args.index, args.generator)
    config, extractor = writer.config, services.finding_extractor
    queries = [(c, c.images[0]) for c in _cases(args.archive, args.split)[: args.limit] if c.images]
    references = [reference_report(c, i, config) for c, i in queries]
    # The notes mode is given the reference's findings (as the extractor sees them) and scored on its Findings.
    ref_findings = [findings_of(r) for r in references]
    stated = extractor.extract_many(ref_findings)

    # -- mode 1: drafts from retrieval (no LLM) ----------------------------------------------------------------
    found_all: list[ImageEvidence] = []
    outputs: dict[str, list[str]] = {name: [] for name in SELECTIONS}
    unsupported: dict[str, list[float]] = {name: [] for name in SELECTIONS}
    confidence: list[float] = []
    for _, image in queries:
        found = writer.evidence.for_image(image.path)
        found_all.append(found)
        if not found.hits:
            for name in SELECTIONS:
                outputs[name].append("")
                unsupported[name].append(0.0)
            confidence.append(0.0)
            continue
        image_text = writer.evidence.image_text_scores(found)
        for name, selection in SELECTIONS.items():
            text = choose_draft(found, replace(config, draft_selection=selection), image_text).source.text
            outputs[name].append(text)
            unsupported[name].append(unsupported_share(writer, text, found, config.min_votes, []))
        features = choose_draft(found, config, image_text).features
        confidence.append(writer.calibration.probability(features) if writer.calibration else features["agreement"])

    # -- mode 1: the refiner and its ablations ------------------------------------------------------------------
    gates: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}
    decoding: dict[str, list[float]] = {"forwards": [], "tokens": [], "accepted": []}
    removed_share: list[float] = []
    abstained: dict[str, int] = {}  # no report: nothing parsed, or every sentence was unsupported
    for name, system in variants(writer).items():
        if name not in wanted:
            continue
        outputs[name], gates[name], seconds[name], unsupported[name] = [], [], [], []
        for n, (_, image) in enumerate(queries):
            started = time.perf_counter()
            try:
                report = system.write(image.path)
            except ReportGenerationError:
                report = None
            seconds[name].append(time.perf_counter() - started)
            text = report.as_text().split("\nDifferential:")[0] if report and not report.abstained else ""
            abstained[name] = abstained.get(name, 0) + int(report is None or report.abstained)
            outputs[name].append(text)
            gates[name].append(float(report.gate) if report and report.gate is not None else float("nan"))
            unsupported[name].append(unsupported_share(writer, text, found_all[n], config.min_votes, []))
            if name == "full" and report:
                kept, removed = len(report.findings), len(report.removed)
                removed_share.append(removed / (kept + removed) if kept + removed else 0.0)
                for key in decoding:
                    decoding[key].append(float(system.stages.get(key, 0)))
            print(f"{name} {n + 1}/{len(queries)}", end="\r", flush=True)
        print(f"{name}: {len(queries)} reports, p50 {statistics.median(seconds[name]):.2f} s")

    image_table, image_each = score_table(extractor, references, outputs)
    for name in image_table:
        image_table[name]["unsupported_sentence_share"] = round(float(np.mean(unsupported[name])), 4)
        if name in abstained:
            image_table[name]["no_report"] = abstained[name]
    if removed_share:
        image_table["full"]["unsupported_before_post_check"] = round(float(np.mean(removed_share)), 4)
    compare = [
        ("consensus", "copy"),
        ("full", "copy"),
        ("full", "consensus"),
        *(("full", s) for s in IMAGE_SYSTEMS[1:]),
    ]
    image_ci = {
        f"{a} - {b}": {
            m: paired_bootstrap(image_each[a][m], image_each[b][m], args.bootstrap) for m in ("CIDEr", "finding_f1")
        }
        for a, b in compare
        if a in image_each and b in image_each
    }
    curve = coverage_curve(confidence, {n: image_each[n]["finding_f1"] for n in image_each})
    chosen = SELECTION_OF.get(config.draft_selection, "consensus")
    usable = [f >= USABLE_F1 for f in image_each[chosen]["finding_f1"]]
    calibration_check = {
        "draft": chosen,
        "usable_rate": float(np.mean(usable)),
        "mean_confidence": float(np.mean(confidence)),
        "brier": float(np.mean([(c - u) ** 2 for c, u in zip(confidence, usable, strict=True)])),
        "auc": roc_auc(confidence, usable),
        "abstain_below": config.abstain_below,
        "coverage_at_threshold": float(np.mean([c >= (config.abstain_below or 0.0) for c in confidence])),
    }
    gate_report = {}
    if "full" in gates:
        valid = [(g, f) for g, f in zip(gates["full"], image_each["full"]["finding_f1"], strict=True) if g == g]
        gate_report = {
            "spread": spread([g for g, _ in valid]),
            "spearman_with_finding_f1": spearman([g for g, _ in valid], [f for _, f in valid]),
        }

    # -- mode 2: notes --------------------------------------------------------------------------------------------
    rng = random.Random(args.seed)
    notes = [simulate_notes(findings, rng) for findings in stated]
    notes_out: dict[str, list[str]] = {"notes_verbatim": [], "notes_expanded": []}
    differential_hits: dict[str, list[list[bool]]] = {}
    notes_unsupported: list[float] = []
    # The notes-mode pipeline with the LLM left out: the expanded notes, checked, as the findings.
    without_llm = replace(writer, config=replace(writer.config, notes_with_llm=False))
    if "notes" in wanted:
        notes_out["notes_full"], notes_out["notes_checked"] = [], []
        seconds["notes_full"], seconds["notes_checked"] = [], []
    truths = [c.report.diagnosis for c, _ in queries]
    for n, ((_case, image), typed) in enumerate(zip(queries, notes, strict=True)):
        prepared = prepare_notes(typed or "no findings", config.max_notes_chars)
        assert prepared is not None
        notes_out["notes_verbatim"].append(typed)
        notes_out["notes_expanded"].append(prepared.expanded)
        hybrid = writer.evidence.for_image(image.path, text=prepared.expanded)
        kb_stated = stated_findings(split_items(prepared.expanded))
        rankings = {
            name: writer.differential(image.path, hybrid, kb_stated, notes=prepared.expanded, weigh=weigh)[0]
            for name, weigh in DIFFERENTIAL_RUNS.items()
        }
        for name, ranking in rankings.items():
            differential_hits.setdefault(name, []).append([recall_at(ranking, truths[n], k) for k in (1, 5)])
        if "notes" in wanted:
            for name, notes_writer in (("notes_full", writer), ("notes_checked", without_llm)):
                started = time.perf_counter()
                try:
                    report = notes_writer.write(image.path, typed or "no findings")
                    text = " ".join(s.sentence for s in report.findings)
                    kept, removed = len(report.findings), len(report.removed)
                    if name == "notes_full":
                        notes_unsupported.append(removed / (kept + removed) if kept + removed else 0.0)
                except ReportGenerationError:
                    text = ""
                seconds[name].append(time.perf_counter() - started)
                notes_out[name].append(text)
        print(f"notes {n + 1}/{len(queries)}", end="\r", flush=True)
    notes_table, notes_each = score_table(extractor, [f"Findings: {r}" for r in ref_findings], notes_out)
    if notes_unsupported:
        notes_table["notes_full"]["unsupported_before_post_check"] = round(float(np.mean(notes_unsupported)), 4)
    notes_ci = {
        f"notes_full - {b}": {
            m: paired_bootstrap(notes_each["notes_full"][m], notes_each[b][m], args.bootstrap)
            for m in ("CIDEr", "finding_f1")
        }
        for b in ("notes_verbatim", "notes_expanded", "notes_checked")
        if "notes_full" in notes_each
    }
    differential = {
        name: {"recall_at_1": float(np.mean([h[0] for h in hits])), "recall_at_5": float(np.mean([h[1] for h in hits]))}
        for name, hits in differential_hits.items()
    }
    differential_ci = {
        f"full - {b}": paired_bootstrap(
            [float(h[1]) for h in differential_hits["full"]],
            [float(h[1]) for h in differential_hits[b]],
            args.bootstrap,
        )
        for b in DIFFERENTIAL_RUNS
        if b != "full"
    }

    # -- print and write ------------------------------------------------------------------------------------------
    columns = [
        "BLEU-1",
        "BLEU-4",
        "METEOR",
        "ROUGE-L",
        "CIDEr",
        "finding_f1",
        "unsupported_sentence_share",
        "mean_words",
    ]
    for title, table in (("image only", image_table), ("notes (findings)", notes_table)):
        print(f"\n{title}\n{'system':<16}" + "".join(f"{c[:14]:>16}" for c in columns))
        for name, row in table.items():
            print(f"{name:<16}" + "".join(f"{row.get(c, float('nan')):>16}" for c in columns))
    for label, comparison in {**image_ci, **notes_ci}.items():
        for metric, ci in comparison.items():
            print(f"{label:<28} {metric:<11} {ci['mean']:+.4f}  [{ci['ci95_low']:+.4f}, {ci['ci95_high']:+.4f}]")
    print("differential:", {k: {m: round(v, 3) for m, v in d.items()} for k, d in differential.items()})
    for label, ci in differential_ci.items():
        print(f"differential R@5 {label:<28} {ci['mean']:+.4f}  [{ci['ci95_low']:+.4f}, {ci['ci95_high']:+.4f}]")
    print("gate:", gate_report)
    print("coverage:", curve)
    print("calibration on dev:", calibration_check)
    speed = {
        name: {"p50_s": round(statistics.median(v), 3), "mean_s": round(statistics.mean(v), 3)}
        for name, v in seconds.items()
        if v
    }
    if decoding["forwards"]:
        speed["full"].update(
            tokens_per_forward=round(sum(decoding["tokens"]) / max(1.0, sum(decoding["forwards"])), 3),
            accepted_per_forward=round(sum(decoding["accepted"]) / max(1.0, sum(decoding["forwards"])), 3),
        )
    print("speed:", speed)
    write_result(
        args.out,
        {
            "index": args.index,
            "split": args.split,
            "images": len(queries),
            "writer": writer.model_info,
            "writer_config": asdict(config),
            "image_only": {"table": image_table, "paired_bootstrap_95": image_ci, "coverage_curve": curve},
            "confidence": "calibrated" if writer.calibration else "agreement (no calibration in the writer folder)",
            "calibration_on_dev": calibration_check,
            "gate": gate_report,
            "notes": {"table": notes_table, "paired_bootstrap_95": notes_ci},
            "differential": {"recall": differential, "paired_bootstrap_95_recall_at_5": differential_ci},
            "speed": speed,
            "examples": [
                {
                    "image": str(i.path),
                    "reference": r,
                    "notes": notes[k],
                    **{n: outputs[n][k] for n in outputs},
                    **{n: notes_out[n][k] for n in notes_out},
                }
                for k, ((_, i), r) in enumerate(zip(queries[:5], references[:5], strict=False))
            ],
        },
    )


if __name__ == "__main__":
    main()
