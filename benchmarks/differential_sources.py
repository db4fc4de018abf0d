"""What each differential source sees, per case, collected once so the blends can be compared cheaply.

For each hand-written notes row (dev, or train for fitting): the study's modality and the predicted body
region, the notes items (text and status), the cases the image alone finds, the cases the notes text alone
finds, and the findings the image's similar cases agree on (image-only mode's stated findings). The true
diagnosis names come with the row (dev: written by hand; train: the case's diagnosis, shortened).

    python -m kgreport.benchmarks.differential_sources --index medpix-train --split dev
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kgreport.benchmarks.notes_quality import load_notes
from kgreport.benchmarks.results_io import RESULTS, write_result
from kgreport.generator.differential import diagnosis_name, short_diagnosis
from kgreport.indexing.archives import open_archive
from kgreport.knowledge.extraction.notes_items import split_items
from kgreport.retrieval.records import Case
from kgreport.retrieval.report_sections import split_report
from kgreport.retrieval.search import Query
from kgreport.usecases.reporting import open_report_writer
from kgreport.usecases.services import Services
from kgreport.usecases.settings import Settings

REPO = Path(__file__).resolve().parents[1]
NOTES = {"dev": REPO / "data" / "notes" / "dev.jsonl", "train": REPO / "data" / "notes" / "train.jsonl"}
CASES_PER_SOURCE = 20  # similar cases each retrieval source votes with
MIN_CASE_VOTES = 2  # image only: a finding the similar cases agree on


def _hits(hits: Any) -> list[list[Any]]:
    return [[h.case_id, round(float(h.score), 5), split_report(h.report).diagnosis] for h in hits]


def collect(index: str, split: str, archive: Path, notes: Path | None = None) -> list[dict[str, Any]]:
    """One record per notes row (see the module docstring)."""
    writer = open_report_writer(Services(Settings()), index)
    searcher = writer.evidence.searcher
    cases = {c.case_id: c for c in open_archive(archive, None, split=split) if isinstance(c, Case)}
    out = []
    for row in load_notes(notes or NOTES[split]):
        case = cases[row["case_id"]]
        image = next(i for i in case.images if i.image_id == row["image"] or i.path.stem == row["image"])
        exclude = {case.case_id}  # train rows are in the index: never find the case itself
        by_image = searcher.search(Query(image=image.path), k=CASES_PER_SOURCE, reported_only=True,
                                   exclude_case_ids=exclude)  # fmt: skip
        by_text = searcher.search(Query(text=row["notes"]), k=CASES_PER_SOURCE, exclude_case_ids=exclude)
        found = writer.evidence.for_image(image.path)
        agreed = [[f.name, f.status] for f in found.evidence.findings if f.votes >= MIN_CASE_VOTES]
        truth = row.get("diagnosis_names") or [
            n
            for n in {short_diagnosis(diagnosis_name(case.report.diagnosis)), diagnosis_name(case.report.diagnosis)}
            if n
        ]
        out.append({
            "case_id": case.case_id,
            "modality": row["modality"],
            "region": by_image.predicted.body_region,
            "items": [[i.text, i.status] for i in split_items(row["notes"], row["modality"]) if i.kind == "finding"],
            "image_hits": _hits(by_image.hits),
            "text_hits": _hits(by_text.hits),
            "case_findings": agreed,
            "truth": truth,
        })  # fmt: skip
        print(row["case_id"], len(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default="medpix-train", help="index built from the train split")
    parser.add_argument("--split", choices=sorted(NOTES), default="dev")
    parser.add_argument("--archive", type=Path, default=REPO.parent / "shared" / "data" / "medpix2")
    args = parser.parse_args()
    rows = collect(args.index, args.split, args.archive)
    write_result(RESULTS / f"differential_sources_{args.split}.json", {"index": args.index, "rows": rows})


if __name__ == "__main__":
    main()
