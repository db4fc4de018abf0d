"""Report quality on MedPix dev, with an index of MedPix train: the baseline, the ablations, the full writer.

Each dev case contributes its first readable image. Its reference is what the writer is trained to
produce (`generator.training.reference_report`: the image's caption and the case's findings, then the
impression or diagnosis, cut to 60 / 20 words). Systems, all scored against the same references:

- `nearest_neighbour`: copy the reference-format report of the top retrieved train image.
- `no_retrieval`: the writer with no prior cases (k = 0: no evidence block, gate 1 = image only).
- `no_graph`: the prior cases without ontology facts in the prompt.
- `fixed_gate_0.5`: the fusion gate pinned at 0.5 instead of computed per case.
- `full`: the trained writer as `kgreport report` runs it.

Metrics: BLEU-1..4, METEOR (Java), ROUGE-L and CIDEr(-D) from pycocoevalcap with its PTB tokenizer
(section headings removed from both sides), and clinical F1: the present finding concepts that
`knowledge`'s extractor finds in the generated and the reference report (per report F1, mean; a pair
of reports with no finding counts 1). A paired bootstrap over images gives 95% intervals for full
minus each other system on CIDEr and clinical F1.

Usage: python -m benchmarks.report_quality --index medpix-train [--generator DIR] [--limit N]
(the index: `kgreport index build ../shared/data/medpix2 --name medpix-train --split train`)
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from api.reporting import open_report_writer
from api.services import Services
from api.settings import Settings
from benchmarks.results_io import RESULTS, write_result
from generator.pipeline import ReportGenerationError, ReportWriter
from generator.training import reference_report
from indexing.archives import open_archive
from retrieval.records import Case, CaseImage
from retrieval.search import Query

REPO = Path(__file__).resolve().parents[1]
HEADING = re.compile(r"\b(findings|impression)\s*:", re.IGNORECASE)
BASELINE = "nearest_neighbour"


def _cases(archive: Path, split: str) -> list[Case]:
    return [c for c in open_archive(archive, None, split=split) if isinstance(c, Case)]


def plain(text: str) -> str:
    """The report without its section headings, one line."""
    return " ".join(HEADING.sub(" ", text).split())


def language_scores(references: list[str], hypotheses: list[str]) -> dict[str, tuple[float, list[float]]]:
    """{metric: (corpus score, per-report scores)} from pycocoevalcap."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    # METEOR's Java process stalls on an empty hypothesis: an empty report is scored as the word "none".
    gts = tokenizer.tokenize({i: [{"caption": r}] for i, r in enumerate(references)})
    res = tokenizer.tokenize({i: [{"caption": h or "none"}] for i, h in enumerate(hypotheses)})
    res = {i: [h or "none" for h in hs] for i, hs in res.items()}
    out: dict[str, tuple[float, list[float]]] = {}
    bleu, bleu_each = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        out[f"BLEU-{n + 1}"] = (float(bleu[n]), [float(x) for x in bleu_each[n]])
    for name, scorer in (("METEOR", Meteor()), ("ROUGE-L", Rouge()), ("CIDEr", Cider())):
        score, each = scorer.compute_score(gts, res)
        out[name] = (float(score), [float(x) for x in each])
    return out


def clinical_f1(extractor: Any, references: list[str], hypotheses: list[str]) -> dict[str, Any]:
    """Per-report F1 of present finding concepts (mean and per report) and micro P / R / F1."""

    def present(texts: list[str]) -> list[set[str]]:
        return [{f.concept_id for f in fs if f.status == "present"} for fs in extractor.extract_many(texts)]

    refs, hyps = present(references), present(hypotheses)
    each = [1.0 if not r and not h else 2 * len(r & h) / (len(r) + len(h)) for r, h in zip(refs, hyps, strict=True)]
    tp = sum(len(r & h) for r, h in zip(refs, hyps, strict=True))
    p = tp / max(1, sum(len(h) for h in hyps))
    r = tp / max(1, sum(len(x) for x in refs))
    micro = 2 * p * r / (p + r) if p + r else 0.0
    return {"mean": float(np.mean(each)), "each": each, "micro_p": p, "micro_r": r, "micro_f1": micro}


def paired_bootstrap(a: list[float], b: list[float], resamples: int, seed: int = 0) -> dict[str, float]:
    """Mean of a − b over images, and its 95% percentile interval from `resamples` paired resamples."""
    diff = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "mean": float(diff.mean()),
        "ci95_low": float(low),
        "ci95_high": float(high),
        "excludes_0": bool(low > 0 or high < 0),
    }


def nearest_neighbour_report(writer: ReportWriter, image: Path, train: dict[str, Case]) -> str:
    hits = writer.evidence.searcher.search(Query(image=image), k=1).hits
    if not hits:
        return ""
    case = train[hits[0].case_id]
    match = next((i for i in case.images if i.image_id == hits[0].image_id), case.images[0])
    return reference_report(case, match)


def systems(writer: ReportWriter) -> dict[str, ReportWriter]:
    builder = writer.evidence
    return {
        "no_retrieval": replace(writer, evidence=replace(builder, k=0)),
        "no_graph": replace(writer, evidence=replace(builder, graph=None)),
        "fixed_gate_0.5": replace(writer, fixed_gate=0.5),
        "full": writer,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default="medpix-train", help="index built from the train split")
    parser.add_argument("--archive", type=Path, default=REPO.parent / "shared" / "data" / "medpix2")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--generator", type=Path, default=None, help="report-writer folder (default: bundled)")
    parser.add_argument("--limit", type=int, default=None, help="first N dev cases")
    parser.add_argument("--systems", default="", help="comma-separated subset of the writer systems")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=RESULTS / "report_quality.json")
    args = parser.parse_args()

    services = Services(Settings())
    writer = open_report_writer(services, args.index, args.generator)
    train = {c.case_id: c for c in _cases(args.archive, "train")}
    queries: list[tuple[Case, CaseImage]] = [(c, c.images[0]) for c in _cases(args.archive, args.split)[: args.limit]]
    references = [reference_report(c, i) for c, i in queries]
    outputs: dict[str, list[str]] = {BASELINE: [nearest_neighbour_report(writer, i.path, train) for _, i in queries]}
    gates: dict[str, list[float]] = {}
    failures: dict[str, int] = {}
    seconds: dict[str, float] = {}
    wanted = {s for s in args.systems.split(",") if s}
    for name, system in systems(writer).items():
        if wanted and name not in wanted:
            continue
        started = time.perf_counter()
        outputs[name], gates[name], failures[name] = [], [], 0
        for i, (_, image) in enumerate(queries):
            try:
                report = system.write(image.path)
            except ReportGenerationError:
                failures[name] += 1
                outputs[name].append("")
                continue
            outputs[name].append(report.as_text())
            gates[name].append(float(report.gate or 0.0))
            print(f"{name} {i + 1}/{len(queries)}", end="\r", flush=True)
        seconds[name] = time.perf_counter() - started
        print(f"{name}: {len(queries)} reports in {seconds[name]:.0f} s, {failures[name]} failed")

    refs = [plain(r) for r in references]
    table: dict[str, dict[str, Any]] = {}
    each: dict[str, dict[str, list[float]]] = {}
    for name, texts in outputs.items():
        hyps = [plain(t) for t in texts]
        scores = language_scores(refs, hyps)
        clinical = clinical_f1(services.finding_extractor, refs, hyps)
        table[name] = {metric: round(score, 4) for metric, (score, _) in scores.items()}
        table[name].update(
            clinical_f1=round(clinical["mean"], 4),
            clinical_micro_f1=round(clinical["micro_f1"], 4),
            mean_words=round(statistics.mean(len(h.split()) for h in hyps), 1),
        )
        if name in gates:
            table[name].update(mean_gate=round(float(np.mean(gates[name] or [0.0])), 3), failures=failures[name])
        each[name] = {"CIDEr": scores["CIDEr"][1], "clinical_f1": clinical["each"]}

    comparisons = {
        f"full - {other}": {
            m: paired_bootstrap(each["full"][m], each[other][m], args.bootstrap) for m in ("CIDEr", "clinical_f1")
        }
        for other in outputs
        if other != "full" and "full" in outputs
    }
    columns = ["BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "clinical_f1", "mean_words"]
    print(f"{'system':<18}" + "".join(f"{c:>12}" for c in columns))
    for name, row in table.items():
        print(f"{name:<18}" + "".join(f"{row[c]:>12}" for c in columns))
    for label, comparison in comparisons.items():
        for metric, ci in comparison.items():
            print(f"{label:<32} {metric:<12} {ci['mean']:+.4f}  [{ci['ci95_low']:+.4f}, {ci['ci95_high']:+.4f}]")
    write_result(
        args.out,
        {
            "index": args.index,
            "split": args.split,
            "images": len(queries),
            "writer": writer.model_info,
            "table": table,
            "paired_bootstrap_95": comparisons,
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "examples": [
                {"image": str(i.path), "reference": r, **{n: outputs[n][k] for n in outputs}}
                for k, ((_, i), r) in enumerate(zip(queries[:5], references[:5], strict=False))
            ],
        },
    )


if __name__ == "__main__":
    main()
