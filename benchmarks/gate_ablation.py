"""Does the per-case gate earn its keep? The refiner's dev loss with its learned gate against fixed gates.

The fusion's gate weighs the image's soft tokens against the retrieved reports' for each case (1 = image
only). If the learned gate is worth having, the dev loss with it is lower than with any one fixed value for
every case. Printed: the gate's spread over the dev examples (mean, standard deviation, 5th and 95th
percentiles, per example kind) and the mean dev loss with the learned gate and with the gate fixed at each of
`--fixed`, per example kind and overall, on the same examples and the same device.

Usage: python -m kgreport.benchmarks.gate_ablation --examples runs/examples.npz [--writer DIR] [--device auto]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kgreport.benchmarks.results_io import RESULTS, write_result
from kgreport.generator.fit import Example, collate, load_examples
from kgreport.generator.model import ReportGenerator
from kgreport.retrieval.device import describe, resolve_device

WRITER = Path(__file__).resolve().parents[1] / "data" / "models" / "report-writer"


@torch.no_grad()
def losses_and_gates(
    generator: ReportGenerator, examples: Sequence[Example], fixed_gate: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example loss (a batch of one: the model's loss is a mean over a batch's tokens) and gate."""
    device = generator.device
    losses, gates = [], []
    for example in examples:
        batch = collate([example]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss, gate = generator.loss(batch, fixed_gate=fixed_gate)
        losses.append(float(loss))
        gates.append(float(gate[0]))
    return np.array(losses), np.array(gates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=Path, required=True, help="examples file; its dev split is used")
    parser.add_argument("--writer", type=Path, default=WRITER)
    parser.add_argument("--llm", default=None)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".kgreport" / "cache" / "llm")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fixed", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument("--limit", type=int, default=None, help="first N dev examples")
    parser.add_argument("--out", type=Path, default=RESULTS / "gate_ablation.json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    splits, meta = load_examples(args.examples)
    dev = splits["dev"][: args.limit]
    generator = ReportGenerator.load(args.writer, args.cache_dir, llm=args.llm, device=device)
    kinds = sorted({e.kind for e in dev})
    by_kind = {k: np.array([e.kind == k for e in dev]) for k in kinds}
    learned, gates = losses_and_gates(generator, dev, None)
    result: dict[str, Any] = {
        "writer": str(args.writer),
        "device": describe(device),
        "examples": {"file": str(args.examples), "index": meta.get("index"), "dev": len(dev)},
        "gate": {
            k: {
                "mean": round(float(gates[m].mean()), 4),
                "std": round(float(gates[m].std()), 4),
                "p05": round(float(np.percentile(gates[m], 5)), 4),
                "p95": round(float(np.percentile(gates[m], 95)), 4),
            }
            for k, m in {"all": np.ones(len(dev), bool), **by_kind}.items()
        },
        "dev_loss": {},
    }
    settings: list[tuple[str, float | None]] = [("learned", None), *((f"fixed {g:g}", g) for g in args.fixed)]
    for name, fixed in settings:
        losses = learned if fixed is None else losses_and_gates(generator, dev, fixed)[0]
        result["dev_loss"][name] = {
            "all": round(float(losses.mean()), 4),
            **{k: round(float(losses[m].mean()), 4) for k, m in by_kind.items()},
        }
        print(name, result["dev_loss"][name])
    print(result["gate"])
    write_result(args.out, result)


if __name__ == "__main__":
    main()
