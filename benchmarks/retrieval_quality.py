"""Retrieval quality on MedPix 2.0: index = train split, queries = dev images.

For each encoder given (default: the bundled one), builds a fresh index of MedPix train with the real
ingest pipeline, then answers every dev image as a query through the real searcher and reports:
- modality and body-region accuracy of the kNN vote (body region = MedPix "Location Category");
- Recall@5 of a case with the same diagnosis (normalised exact match of "Case Diagnosis"), over the
  dev queries whose diagnosis occurs in train at all (others cannot be found);
- text→image Recall@10: each dev image's caption text against all train + dev images, the image itself
  being the target (CLIP text tower);
- build throughput on the real images.
Compare ImageNet-initialised and from-scratch encoders by passing both.

Usage: python -m benchmarks.retrieval_quality [--medpix ../shared/data/medpix2] [--encoder DIR ...]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.results_io import RESULTS, write_result
from indexing.archives.medpix import MedPixArchive
from indexing.pipeline import Ingestor
from indexing.training.pairs import pair_text
from retrieval.case_store import CaseStore
from retrieval.encoders.image_encoder import load_image_encoder
from retrieval.encoders.text_encoder import TextEncoder
from retrieval.encoders.volume_embedding import embed_decoded
from retrieval.imaging import load_case_image
from retrieval.records import Case
from retrieval.search import CaseSearcher, Query

REPO = Path(__file__).resolve().parents[1]


def norm_diagnosis(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", (text or "").lower()).split())


def evaluate(encoder_path: Path, medpix: Path, text_encoder: TextEncoder, limit: int | None) -> dict:
    encoder = load_image_encoder(encoder_path)
    train_cases = [c for c in MedPixArchive(medpix, "train", limit=limit) if isinstance(c, Case)]
    dev_cases = [c for c in MedPixArchive(medpix, "dev") if isinstance(c, Case)]
    with tempfile.TemporaryDirectory() as tmp:
        store = CaseStore.create_for(Path(tmp) / "idx", encoder, text_encoder)
        summary = Ingestor(store, encoder, text_encoder).ingest(train_cases)
        searcher = CaseSearcher(store, encoder, text_encoder)
        train_dx = {norm_diagnosis(c.report.diagnosis) for c in train_cases}
        modality_ok, region_ok, dx_hits, latencies = [], [], [], []
        for case in dev_cases:
            dx = norm_diagnosis(case.report.diagnosis)
            for image in case.images:
                t = time.perf_counter()
                result = searcher.search(Query(image=image.path), k=5)
                latencies.append((time.perf_counter() - t) * 1000)
                modality_ok.append(result.predicted.modality == image.modality)
                region_ok.append(result.predicted.body_region == image.body_region)
                if dx in train_dx:
                    stored = [store.get_case(h.case_id) for h in result.hits]
                    found = {norm_diagnosis(c["report"]["diagnosis"]) for c in stored if c is not None}
                    dx_hits.append(dx in found)
        store.close()
    # text→image: dev captions against train + dev images (the caption's own image is the target)
    gallery = [(c, img) for c in train_cases + dev_cases for img in c.images]
    vectors = np.concatenate(
        [
            embed_decoded(encoder, [load_case_image(img) for _, img in gallery[i : i + 64]])
            for i in range(0, len(gallery), 64)
        ]
    )
    dev_offset = sum(len(c.images) for c in train_cases)
    texts = [pair_text(img, c) for c, img in gallery[dev_offset:]]
    ranks = np.argsort(-(encoder.embed_texts(texts) @ vectors.T), axis=1)[:, :10]
    t2i = float(np.mean([dev_offset + i in row for i, row in enumerate(ranks)]))
    return {
        "encoder": str(encoder_path),
        "encoder_name": encoder.name,
        "init": (getattr(encoder, "info", {}).get("training") or {}).get("config", {}).get("init"),
        "train_cases": len(train_cases),
        "train_images": summary.images_added,
        "dev_queries": len(modality_ok),
        "modality_accuracy": round(float(np.mean(modality_ok)), 4),
        "body_region_accuracy": round(float(np.mean(region_ok)), 4),
        "same_diagnosis_recall_at_5": round(float(np.mean(dx_hits)), 4) if dx_hits else None,
        "same_diagnosis_queries": len(dx_hits),
        "text_to_image_recall_at_10": round(t2i, 4),
        "text_to_image_gallery": len(gallery),
        "build_images_per_second": round(summary.images_per_second, 2),
        "query_p50_ms": round(float(np.median(latencies)), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--medpix", type=Path, default=REPO.parent / "shared" / "data" / "medpix2")
    parser.add_argument("--encoder", type=Path, nargs="+", default=[REPO / "data" / "models" / "ct-encoder"])
    parser.add_argument("--limit", type=int, default=None, help="first N train cases only (smoke runs)")
    parser.add_argument("--out", type=Path, default=RESULTS / "retrieval_quality.json")
    args = parser.parse_args()
    text_encoder = TextEncoder()
    rows = []
    for path in args.encoder:
        row = evaluate(path, args.medpix, text_encoder, args.limit)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "benchmark": "retrieval_quality",
        "targets": {"modality_accuracy": 0.97, "body_region_accuracy": 0.90},
        "anchor": "DR-Minerva reports >92% modality and body location on MedPix 2.0",
        "results": rows,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
