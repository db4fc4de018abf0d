"""The retrieval comparison as a Markdown table (README, model card) from `retrieval_quality` JSON files.

Usage: python -m kgreport.benchmarks.retrieval_table benchmarks/results/retrieval_quality*.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

COLUMNS = (
    ("modality_accuracy", "modality", False),
    ("body_region_accuracy", "body region", True),
    ("location_accuracy", "fine location", True),
    ("category_recall_at_5", "category R@5", True),
    ("category_recall_at_10", "category R@10", False),
    ("acr_pathology_recall_at_5", "ACR class R@5", False),
    ("finding_overlap_at_5", "finding overlap@5", True),
    ("cider_top1_copy", "CIDEr top-1 copy", False),
    ("cider_consensus_draft", "CIDEr consensus", False),
)


def cell(measure: dict[str, Any], with_interval: bool) -> str:
    text = f"{measure['mean']:.3f}"
    return f"{text} [{measure['ci95_low']:.2f}, {measure['ci95_high']:.2f}]" if with_interval else text


def rows(result: dict[str, Any]) -> list[str]:
    name = Path(result["encoder"]).name
    out = []
    for variant in result["variants"]:
        cells = [cell(variant["measures"][key], ci) for key, _, ci in COLUMNS]
        out.append(f"| {name} | {variant['variant']} | " + " | ".join(cells) + f" | {variant['query_p50_ms']} |")
    return out


def table(results: list[dict[str, Any]]) -> str:
    head = "| encoder | search | " + " | ".join(label for _, label, _ in COLUMNS) + " | query p50 ms |"
    rule = "|" + "---|" * (len(COLUMNS) + 3)
    return "\n".join([head, rule, *(row for result in results for row in rows(result))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args()
    results = [r for f in args.files for r in json.loads(f.read_text())["results"]]
    print(table(results))


if __name__ == "__main__":
    main()
