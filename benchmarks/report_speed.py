"""Report-writing speed and memory on this machine, int8 and float32 decoding side by side.

For each setting a fresh process loads the writer (timed), writes one warm-up report, then one report
per MedPix dev image (its first image, `--images` cases): the whole `ReportWriter.write` (embed, search,
vote, ground, prompt, generate up to `--max-new-tokens`, parse, cite). Printed: load time, p50 / p95
seconds per report, generated tokens per report and per second, the process's peak resident memory
(ru_maxrss), and the writer's training wall time per epoch from its `training.json`.

Where the time goes: the median seconds of each stage of a report (evidence, generate, post-check) and
the LLM's floors on this machine, for the longest prompt the evidence budget allows: one prefill, one
decoding step after it, and one product with every weight matrix (what each decoding step has to read
from memory, so no decoding step can be faster).

Usage: python -m benchmarks.report_speed [--index medpix-train] [--generator DIR] [--images 12]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.results_io import RESULTS, write_result

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"int8": "1", "float32": "0"}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One setting, in this process (the parent sets KGREPORT_REPORT_INT8)."""
    from api.reporting import open_report_writer
    from api.services import Services
    from api.settings import Settings
    from indexing.archives import open_archive
    from retrieval.records import Case

    images = [c.images[0].path for c in open_archive(args.archive, None, split="dev") if isinstance(c, Case)]
    images = images[: args.images + 1]
    started = time.perf_counter()
    writer = open_report_writer(Services(Settings()), args.index, args.generator)
    load = time.perf_counter() - started
    writer.max_new_tokens = args.max_new_tokens
    writer.write(images[0])  # warm-up: first-call allocations, lazy imports
    seconds, tokens, stages = [], [], []
    for image in images[1:]:
        started = time.perf_counter()
        report = writer.write(image)
        seconds.append(time.perf_counter() - started)
        tokens.append(writer.generator.count_tokens(report.as_text()))
        stages.append(dict(writer.stages))
    prompt_tokens = _longest_prompt(writer)
    return {
        "load_seconds": round(load, 2),
        "reports": len(seconds),
        "p50_seconds": round(statistics.median(seconds), 2),
        "p95_seconds": round(_percentile(seconds, 0.95), 2),
        "median_tokens": statistics.median(tokens),
        "tokens_per_second": round(sum(tokens) / sum(seconds), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
        "stage_p50_seconds": {k: round(statistics.median(s.get(k, 0.0) for s in stages), 3) for k in stages[0]},
        "generate_ms_per_token": round(1000 * sum(s["generate"] for s in stages) / sum(tokens), 1),
        "floors": {"prompt_tokens": prompt_tokens, **llm_floors(writer.generator.llm, prompt_tokens)},
    }


def _longest_prompt(writer: Any) -> int:
    """Tokens of the longest prompt: chat template and instruction, soft tokens, the full evidence budget."""
    generator = writer.generator
    before, after = generator._prompt_ids("")
    return len(before) + len(after) + generator.config.fusion.soft_tokens + writer.evidence.prompt_budget


def _median_ms(run: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 1)


def llm_floors(llm: Any, prompt_tokens: int, repeats: int = 15) -> dict[str, float]:
    """Milliseconds for a prefill of `prompt_tokens`, one decoding step after it, and one product of a
    single vector with every linear layer (float or int8) of the LLM: the bytes a decoding step reads."""
    import torch

    prompt = torch.randint(100, 5000, (1, prompt_tokens))
    step = torch.tensor([[123]])
    # Innermost linear layers (an int8 layer keeps its weights in a child that is not one).
    layers = [m for m in llm.modules() if hasattr(m, "in_features")]
    layers = [m for m in layers if not any(hasattr(c, "in_features") for c in m.children())]
    vectors = {m.in_features: torch.randn(1, m.in_features) for m in layers}
    with torch.no_grad():
        # Only the last position's logits, as generation computes them.
        cache = llm(input_ids=prompt, use_cache=True, logits_to_keep=1).cache

        def decode_step() -> None:
            llm(input_ids=step, cache=cache, use_cache=True)
            cache.crop(-1)  # back to the prompt: every step sees the same context length

        def read_weights() -> None:
            for layer in layers:
                layer(vectors[layer.in_features])

        return {
            "prefill_ms": _median_ms(lambda: llm(input_ids=prompt, use_cache=True, logits_to_keep=1), 3),
            "decode_step_ms": _median_ms(decode_step, repeats),
            "read_all_weights_ms": _median_ms(read_weights, repeats),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default="medpix-train")
    parser.add_argument("--archive", type=Path, default=REPO.parent / "shared" / "data" / "medpix2")
    parser.add_argument("--generator", type=Path, default=None, help="report-writer folder (default: bundled)")
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--max-new-tokens", type=int, default=120)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "report_speed.json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return

    results: dict[str, Any] = {}
    for name, flag in SETTINGS.items():
        argv = [sys.executable, "-m", "benchmarks.report_speed", "--child", *sys.argv[1:]]
        done = subprocess.run(
            argv, env={**os.environ, "KGREPORT_REPORT_INT8": flag}, capture_output=True, text=True, check=True
        )
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, results[name])
    ratio = results["float32"]["p50_seconds"] / results["int8"]["p50_seconds"]
    print(f"int8 is {ratio:.2f}x faster per report (p50)")
    folder = args.generator or REPO / "data" / "models" / "report-writer"
    card = json.loads((folder / "training.json").read_text()) if (folder / "training.json").is_file() else {}
    training = card.get("result", {})
    examples = card.get("train", {}).get("examples")
    per_epoch = training.get("seconds_per_epoch")
    if per_epoch and training.get("examples_seen", 0) < (examples or 0):  # a run stopped before an epoch ended
        per_epoch = training["seconds"] / training["examples_seen"] * examples
    print(
        f"training: {per_epoch and round(per_epoch)} s per epoch of {examples} examples (from {folder}/training.json)"
    )
    write_result(
        args.out,
        {
            "index": args.index,
            "max_new_tokens": args.max_new_tokens,
            "settings": results,
            "float32_over_int8_p50": round(ratio, 2),
            "training_seconds_per_epoch": per_epoch and round(per_epoch, 1),
            "training_examples_per_epoch": examples,
        },
    )


if __name__ == "__main__":
    main()
