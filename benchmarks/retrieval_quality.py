"""Retrieval quality on MedPix 2.0: index = train split, queries = every dev image.

For each encoder given (default: the bundled one), builds a fresh index of MedPix train with the real
ingest pipeline, then answers every dev image through the real searcher under each search variant and
reports, with 95 % intervals from a bootstrap over dev cases (a case's images are not independent):
- accuracy of the searcher's predicted modality, body region (MedPix "Location Category") and fine
  location (MedPix "Location", e.g. "Chest, Pulmonary");
- Recall@5 and @10 of a retrieved case sharing the query case's disease category (MedPix
  `Topic.Category`), Recall@5 of one sharing its ACR pathology class (the first digit of the ACR
  code's pathology field) and of one sharing its diagnosis (normalised exact match, only queries
  whose diagnosis occurs in train); the chance level of the category and ACR Recall@5 (five train
  cases drawn at random) beside them;
- finding overlap@5: mean Jaccard of the present RadLex findings (our extractor, on findings and
  diagnosis) of the query case's report and each of the top-5 cases' reports;
- CIDEr of the top-1 copy and of the consensus draft of the top 3 (`generator.draft`), each against
  the query's reference report (`generator.training.reference_report`, as the report benchmark);
- text→image Recall@10 (each dev caption against all train + dev images), build throughput and the
  image query p50 (decode, embed, search, vote).

Variants are `+`-joined search options: `baseline`, `qe=M` (query expansion), `vote=case`,
`heads=W` (blend the encoder's heads into the predicted labels), `tta` (query and its mirror image),
`pool` (cases ranked by their pooled images instead of their best image).

Usage: python -m kgreport.benchmarks.retrieval_quality [--medpix ../shared/data/medpix2] [--encoder DIR ...]
       [--variants baseline qe=5 vote=case heads=0.5 tta]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kgreport.benchmarks.results_io import RESULTS, write_result
from kgreport.benchmarks.retrieval_metrics import (
    QueryOutcomes,
    any_match,
    chance_of_any,
    jaccard,
    label_counts,
    norm_label,
)
from kgreport.generator.draft import consensus_index
from kgreport.generator.training import reference_report
from kgreport.indexing.archives.medpix import MedPixArchive
from kgreport.indexing.pipeline import Ingestor
from kgreport.indexing.training.pairs import acr_pathology, pair_text
from kgreport.retrieval.config import SearchConfig
from kgreport.retrieval.encoders.image_encoder import ImageEncoder, load_image_encoder
from kgreport.retrieval.encoders.test_time import FlipAveragedEncoder
from kgreport.retrieval.encoders.text_encoder import TextEncoder
from kgreport.retrieval.encoders.volume_embedding import embed_decoded
from kgreport.retrieval.imaging import load_case_image
from kgreport.retrieval.records import Case, CaseImage, Hit, SearchResult
from kgreport.retrieval.search import CaseSearcher, Query
from kgreport.retrieval.stores.local.store import CaseStore

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VARIANTS = ("baseline", "vote=case", "heads=0.5", "qe=5", "tta")
CONSENSUS_K = 3


@dataclass(frozen=True)
class Variant:
    """Search options parsed from a name such as `qe=5+heads=0.5`."""

    name: str
    query_expansion: int = 0
    vote_by: str = "image"
    head_weight: float = 0.0
    tta: bool = False
    case_pooling: bool = False

    @classmethod
    def parse(cls, name: str) -> Variant:
        options: dict[str, Any] = {}
        for part in name.split("+"):
            key, _, value = part.partition("=")
            if key == "baseline":
                continue
            if key == "qe":
                options["query_expansion"] = int(value)
            elif key == "vote":
                options["vote_by"] = value
            elif key == "heads":
                options["head_weight"] = float(value)
            elif key == "tta":
                options["tta"] = True
            elif key == "pool":
                options["case_pooling"] = True
            else:
                raise SystemExit(f"unknown variant part {part!r} in {name!r}")
        return cls(name, **options)


@dataclass(frozen=True)
class CaseLabels:
    """What a case is judged by: disease category, ACR pathology class, diagnosis, present findings."""

    category: str
    acr: str
    diagnosis: str
    findings: frozenset[str]


def case_labels(cases: Sequence[Case], extractor: Any) -> dict[str, CaseLabels]:
    texts = [f"{c.report.findings}\n{c.report.diagnosis}" for c in cases]
    findings = extractor.extract_many(texts)
    return {
        c.case_id: CaseLabels(
            category=norm_label(c.metadata.get("category")),
            acr=acr_pathology(c.metadata.get("acr_code")) or "",
            diagnosis=norm_label(c.report.diagnosis),
            findings=frozenset(f.concept_id for f in fs if f.status == "present"),
        )
        for c, fs in zip(cases, findings, strict=True)
    }


def cider_each(references: list[str], hypotheses: list[str]) -> tuple[float, list[float]]:
    """Corpus CIDEr(-D) and per-query scores, pycocoevalcap with its PTB tokenizer."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from kgreport.benchmarks.report_quality import plain

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": plain(r)}] for i, r in enumerate(references)})
    res = tokenizer.tokenize({i: [{"caption": plain(h) or "none"}] for i, h in enumerate(hypotheses)})
    res = {i: [h or "none" for h in hs] for i, hs in res.items()}
    score, each = Cider().compute_score(gts, res)
    return float(score), [float(x) for x in each]


class Judge:
    """Scores one variant's answers to the dev queries against the train archive's labels."""

    def __init__(self, train: Sequence[Case], dev: Sequence[Case], extractor: Any) -> None:
        self.train = {c.case_id: c for c in train}
        self.images: dict[str, tuple[Case, CaseImage]] = {i.image_id: (c, i) for c in train for i in c.images}
        self.labels = case_labels([*train, *dev], extractor)
        train_labels = [self.labels[c.case_id] for c in train]
        self.category_counts = label_counts(x.category for x in train_labels)
        self.acr_counts = label_counts(x.acr for x in train_labels)
        self.diagnoses = {x.diagnosis for x in train_labels}

    def draft(self, hit: Hit) -> str:
        case, image = self.images[hit.image_id]
        return reference_report(case, image)

    def score(self, case: Case, image: CaseImage, result: SearchResult) -> dict[str, float | bool | None]:
        """One query's measures from its hits (best image per case) and predicted labels."""
        hits = result.hits
        own = self.labels[case.case_id]
        found = [self.labels[h.case_id] for h in hits]
        n = len(self.train)
        overlap = (
            float(np.mean([jaccard(set(own.findings), set(x.findings)) for x in found[:5]]))
            if own.findings and found
            else None
        )
        category = own.category if own.category in self.category_counts else ""
        acr = own.acr if own.acr in self.acr_counts else ""
        return dict(
            modality_accuracy=result.predicted.modality == image.modality,
            body_region_accuracy=result.predicted.body_region == image.body_region,
            location_accuracy=result.predicted.location == image.metadata["location"]
            if image.metadata.get("location")
            else None,
            category_recall_at_5=any_match(category, [x.category for x in found[:5]]),
            category_recall_at_10=any_match(category, [x.category for x in found[:10]]),
            category_chance_at_5=chance_of_any(n, self.category_counts.get(category, 0), 5) if category else None,
            acr_pathology_recall_at_5=any_match(acr, [x.acr for x in found[:5]]),
            acr_pathology_chance_at_5=chance_of_any(n, self.acr_counts.get(acr, 0), 5) if acr else None,
            same_diagnosis_recall_at_5=any_match(
                own.diagnosis if own.diagnosis in self.diagnoses else "", [x.diagnosis for x in found[:5]]
            ),
            finding_overlap_at_5=overlap,
        )

    def drafts(self, hits: Sequence[Hit]) -> tuple[str, str]:
        """The top-1 copy and the consensus draft of the top `CONSENSUS_K` hits."""
        drafts = [self.draft(h) for h in hits[:CONSENSUS_K]]
        if not drafts:
            return "", ""
        return drafts[0], drafts[consensus_index(drafts, [h.score for h in hits[:CONSENSUS_K]])]


def run_variant(
    variant: Variant,
    store: CaseStore,
    encoder: ImageEncoder,
    text_encoder: TextEncoder,
    judge: Judge,
    dev: Sequence[Case],
    resamples: int,
) -> dict[str, Any]:
    query_encoder: ImageEncoder = FlipAveragedEncoder(encoder) if variant.tta else encoder
    searcher = CaseSearcher(
        store,
        query_encoder,
        text_encoder,
        SearchConfig(
            query_expansion=variant.query_expansion,
            vote_by=variant.vote_by,
            head_weight=variant.head_weight,
            case_pooling=variant.case_pooling,
        ),
    )
    outcomes = QueryOutcomes()
    references, copies, consensus, latencies = [], [], [], []
    for case in dev:
        for image in case.images:
            started = time.perf_counter()
            result = searcher.search(Query(image=image.path), k=10)
            latencies.append((time.perf_counter() - started) * 1000)
            outcomes.add(case.case_id, **judge.score(case, image, result))
            copy, draft = judge.drafts(result.hits)
            references.append(reference_report(case, image))
            copies.append(copy)
            consensus.append(draft)
    copy_cider, copy_each = cider_each(references, copies)
    draft_cider, draft_each = cider_each(references, consensus)
    outcomes.values["cider_top1_copy"] = list(copy_each)
    outcomes.values["cider_consensus_draft"] = list(draft_each)
    return {
        "variant": variant.name,
        "measures": outcomes.summary(resamples),
        "corpus_cider": {"top1_copy": round(copy_cider, 4), "consensus_draft": round(draft_cider, 4)},
        "query_p50_ms": round(float(np.median(latencies)), 1),
    }


def text_to_image_recall(encoder: ImageEncoder, train: Sequence[Case], dev: Sequence[Case]) -> tuple[float, int]:
    """Each dev caption against all train + dev images; its own image is the target."""
    gallery = [(c, img) for c in [*train, *dev] for img in c.images]
    vectors = np.concatenate(
        [
            embed_decoded(encoder, [load_case_image(img) for _, img in gallery[i : i + 64]])
            for i in range(0, len(gallery), 64)
        ]
    )
    offset = sum(len(c.images) for c in train)
    texts = [pair_text(img, c) for c, img in gallery[offset:]]
    ranks = np.argsort(-(encoder.embed_texts(texts) @ vectors.T), axis=1)[:, :10]
    return float(np.mean([offset + i in row for i, row in enumerate(ranks)])), len(gallery)


def evaluate(
    encoder_path: Path,
    medpix: Path,
    text_encoder: TextEncoder,
    extractor: Any,
    variants: Sequence[Variant],
    limit: int | None,
    resamples: int,
) -> dict[str, Any]:
    encoder = load_image_encoder(encoder_path)
    train = [c for c in MedPixArchive(medpix, "train", limit=limit) if isinstance(c, Case)]
    dev = [c for c in MedPixArchive(medpix, "dev") if isinstance(c, Case)]
    judge = Judge(train, dev, extractor)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = CaseStore.create_for(Path(tmp) / "idx", encoder, text_encoder)
        summary = Ingestor(store, encoder, text_encoder).ingest(train)
        for variant in variants:
            row = run_variant(variant, store, encoder, text_encoder, judge, dev, resamples)
            rows.append(row)
            print(json.dumps({"encoder": _shown(encoder_path), **row}), flush=True)
        store.close()
    t2i, gallery = text_to_image_recall(encoder, train, dev)
    return {
        "encoder": _shown(encoder_path),
        "encoder_name": encoder.name,
        "training": {
            k: v
            for k, v in ((getattr(encoder, "info", {}).get("training") or {}).get("config") or {}).items()
            if k in {"init", "heads", "label_smoothing", "text_target", "group_by_region", "model", "epochs"}
        },
        "train_cases": len(train),
        "train_images": summary.images_added,
        "dev_cases": len(dev),
        "dev_queries": sum(len(c.images) for c in dev),
        "text_to_image_recall_at_10": round(t2i, 4),
        "text_to_image_gallery": gallery,
        "build_images_per_second": round(summary.images_per_second, 2),
        "variants": rows,
    }


def _shown(path: Path) -> str:
    """A path as recorded in the results: relative to the repository when inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def print_table(results: list[dict[str, Any]]) -> None:
    columns = [
        ("modality_accuracy", "modality"),
        ("body_region_accuracy", "region"),
        ("location_accuracy", "location"),
        ("category_recall_at_5", "cat R@5"),
        ("category_recall_at_10", "cat R@10"),
        ("acr_pathology_recall_at_5", "ACR R@5"),
        ("same_diagnosis_recall_at_5", "dx R@5"),
        ("finding_overlap_at_5", "overlap@5"),
        ("cider_top1_copy", "CIDEr copy"),
        ("cider_consensus_draft", "CIDEr cons."),
    ]
    print(f"{'encoder / variant':<44}" + "".join(f"{label:>20}" for _, label in columns) + f"{'p50 ms':>8}")
    for result in results:
        for row in result["variants"]:
            label = f"{Path(result['encoder']).name} {row['variant']}"
            cells = "".join(
                f"{m['mean']:>7.3f} [{m['ci95_low']:.3f},{m['ci95_high']:.3f}]"
                for m in (row["measures"][key] for key, _ in columns)
            )
            print(f"{label:<44}{cells}{row['query_p50_ms']:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--medpix", type=Path, default=REPO.parent / "shared" / "data" / "medpix2")
    parser.add_argument("--encoder", type=Path, nargs="+", default=[REPO / "data" / "models" / "ct-encoder"])
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    parser.add_argument("--limit", type=int, default=None, help="first N train cases only (smoke runs)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="case-level bootstrap resamples")
    parser.add_argument("--out", type=Path, default=RESULTS / "retrieval_quality.json")
    args = parser.parse_args()
    from kgreport.usecases.services import Services
    from kgreport.usecases.settings import Settings

    variants = [Variant.parse(v) for v in args.variants]
    services = Services(Settings())
    text_encoder = TextEncoder()
    results = [
        evaluate(path, args.medpix, text_encoder, services.finding_extractor, variants, args.limit, args.bootstrap)
        for path in args.encoder
    ]
    print_table(results)
    write_result(
        args.out,
        {
            "benchmark": "retrieval_quality",
            "targets": {
                "body_region_accuracy": 0.90,
                "location_accuracy": 0.75,
                "category_recall_at_5": "2x today's",
                "finding_overlap_at_5": "+50 %",
                "query_p50_ms": 30,
                "build_images_per_second": 20,
            },
            "anchor": "DR-Minerva reports >92% modality and body location on MedPix 2.0",
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
