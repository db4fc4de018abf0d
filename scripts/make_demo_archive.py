"""Write the small bundled demo archive `data/demo/` from MedPix 2.0 (run once by maintainers).

Picks CASES_PER_REGION train cases per body region (both CT and MR), copies their rows and their
images downscaled to 256 px (JPEG quality 85), and holds out a few dev images as demo queries.
Usage: python scripts/make_demo_archive.py ../shared/data/medpix2 data/demo
"""

from __future__ import annotations

import json
import random
import sys
from collections import defaultdict
from pathlib import Path

from PIL import Image

CASES_PER_REGION = 12
QUERIES = 4
MAX_SIDE = 256


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _copy_image(src: Path, dst: Path) -> None:
    image = Image.open(src).convert("L")
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BICUBIC)
    image.save(dst, quality=85)


def main(source: Path, target: Path) -> None:
    rng = random.Random(7)
    (target / "images").mkdir(parents=True, exist_ok=True)
    (target / "queries").mkdir(parents=True, exist_ok=True)
    cases = _rows(source / "data_train.jsonl")
    descriptions = {d["image"]: d for d in _rows(source / "descriptions_train.jsonl")}
    by_region: dict[str, list[dict]] = defaultdict(list)
    for case in cases:
        names = case["TAC"] + case["MRI"]
        if names and (case["Case"].get("Findings") or "").strip() and len(names) <= 4:
            by_region[descriptions[names[0]]["Location Category"]].append(case)
    chosen = [c for region in sorted(by_region) for c in rng.sample(by_region[region], CASES_PER_REGION)]
    kept_images = set()
    for case in chosen:
        for name in case["TAC"] + case["MRI"]:
            _copy_image(source / "images" / f"{name}.jpg", target / "images" / f"{name}.jpg")
            kept_images.add(name)
    (target / "data_train.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chosen))
    (target / "descriptions_train.jsonl").write_text(
        "".join(json.dumps(descriptions[n]) + "\n" for n in sorted(kept_images))
    )
    dev = _rows(source / "descriptions_dev.jsonl")
    queries = []
    for region in ["Thorax", "Head", "Abdomen", "Spine and Muscles"][:QUERIES]:
        pick = next(d for d in dev if d["Location Category"] == region and d["Type"] == "CT")
        _copy_image(source / "images" / f"{pick['image']}.jpg", target / "queries" / f"{pick['image']}.jpg")
        queries.append(pick)
    (target / "queries" / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    print(f"{len(chosen)} cases, {len(kept_images)} images, {len(queries)} held-out queries → {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
