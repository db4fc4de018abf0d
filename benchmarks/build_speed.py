"""Index build throughput (images/s) with the default encoders on real MedPix images, per stage.

Times the whole ingest (decode → CT encoder → MiniLM → SQLite + FAISS) on the first N train cases,
then the stages alone on the same images, so a slow stage is visible. The first batch warms the
models up and is not counted.

Usage: python -m kgreport.benchmarks.build_speed [--medpix ../shared/data/medpix2] [--cases 150]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from kgreport.benchmarks.results_io import RESULTS, write_result
from kgreport.indexing.archives.medpix import MedPixArchive
from kgreport.indexing.pipeline import Ingestor, report_text_for_embedding
from kgreport.retrieval.encoders.image_encoder import load_image_encoder
from kgreport.retrieval.encoders.text_encoder import TextEncoder
from kgreport.retrieval.encoders.volume_embedding import embed_decoded
from kgreport.retrieval.imaging import load_case_image
from kgreport.retrieval.records import Case
from kgreport.retrieval.stores.local.store import CaseStore

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--medpix", type=Path, default=REPO.parent / "shared" / "data" / "medpix2")
    parser.add_argument("--encoder", type=Path, default=REPO / "data" / "models" / "ct-encoder")
    parser.add_argument("--cases", type=int, default=150)
    parser.add_argument("--out", type=Path, default=RESULTS / "build_speed.json")
    args = parser.parse_args()

    encoder = load_image_encoder(args.encoder)
    text_encoder = TextEncoder()
    cases = [c for c in MedPixArchive(args.medpix, "train", limit=args.cases + 8) if isinstance(c, Case)]
    warmup, cases = cases[:8], cases[8:]
    images = [img for c in cases for img in c.images]

    with tempfile.TemporaryDirectory() as tmp:
        store = CaseStore.create_for(Path(tmp) / "idx", encoder, text_encoder)
        ingestor = Ingestor(store, encoder, text_encoder)
        ingestor.ingest(warmup)
        summary = ingestor.ingest(cases)
        store.close()

    t = time.perf_counter()
    decoded = [load_case_image(img) for img in images]
    decode_s = time.perf_counter() - t
    t = time.perf_counter()
    embed_decoded(encoder, decoded)
    image_s = time.perf_counter() - t
    t = time.perf_counter()
    text_encoder.embed([report_text_for_embedding(c) for c in cases])
    text_s = time.perf_counter() - t

    n = len(images)
    result = {
        "benchmark": "build_speed",
        "encoder": encoder.name,
        "cases": len(cases),
        "images": n,
        "build_images_per_second": round(summary.images_per_second, 2),
        "build_seconds": round(summary.seconds, 2),
        "stage_images_per_second": {
            "decode": round(n / decode_s, 1),
            "image_embedding": round(n / image_s, 1),
            "report_embedding_cases": round(len(cases) / text_s, 1),
        },
        "target_images_per_second": 20,
    }
    print(json.dumps(result, indent=2))
    write_result(args.out, result)


if __name__ == "__main__":
    main()
