"""Write the bundled ontology under data/ontology/ from the full sources in ../shared/data/ontology.

RadLex is copied as `term,RID,parent` (gzip); the Open Imaging Finding Models are compacted to the
fields kgreport uses (`compact_finding_model`: a tenth of the source size) and gzip-compressed.
Output is byte-for-byte reproducible (gzip mtime 0).

Usage: python scripts/bundle_ontology.py [--source ../shared/data/ontology] [--out data/ontology]
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from kgreport.knowledge.ontology.sources import compact_finding_model, read_finding_models

REPO = Path(__file__).resolve().parents[1]


def _write_gzip(path: Path, text: str) -> None:
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as handle:
        handle.write(text.encode("utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "ontology")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "ontology")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    _write_gzip(args.out / "radlex.csv.gz", (args.source / "radlex.csv").read_text(encoding="utf-8"))
    models = [compact_finding_model(m) for m in read_finding_models(args.source / "finding_models.jsonl")]
    _write_gzip(
        args.out / "finding_models.jsonl.gz",
        "".join(json.dumps(m, ensure_ascii=False, separators=(",", ":")) + "\n" for m in models),
    )
    for path in sorted(args.out.glob("*.gz")):
        print(f"{path}: {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
