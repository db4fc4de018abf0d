"""Report-writing speed and memory on this machine: speculative against plain greedy decoding, float32 and int8.

For each setting a fresh process loads the writer (timed), writes one warm-up report, then, per MedPix dev
image (its first image, `--images` cases), one image-only report and one from notes (simulated from the
case's findings): the whole `ReportWriter.write` (embed, search, vote, ground, prompt, generate up to
`--max-new-tokens`, parse, cite, post-check). Settings: `speculative` (draft-lookup decoding, the default),
`plain` (one token per forward), `int8` (speculative, int8 weights). Printed: load time, p50 / p95 seconds
per report per mode, tokens per forward, the process's peak resident memory (ru_maxrss), whether plain and
speculative wrote the same reports (they must: same greedy decoding), and the writer's training time.

Where the time goes: the median seconds of each stage of a report (evidence, generate, post-check) and
the LLM's floors on this machine, for the longest prompt the evidence budget allows: one prefill, one
decoding step after it, and one product with every weight matrix (what each decoding step has to read
from memory, so no decoding step can be faster).

Usage: python -m kgreport.benchmarks.report_speed [--index medpix-train] [--generator DIR] [--images 12]
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

from kgreport.benchmarks.results_io import RESULTS, write_result

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"speculative": ("0", 10), "plain": ("0", 0), "int8": ("1", 10)}  # (int8, lookup tokens)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One setting, in this process (the parent sets KGREPORT_REPORT_INT8 and --lookup)."""
    import random
    from dataclasses import replace

    from kgreport.generator.notes import simulate_notes
    from kgreport.indexing.archives import open_archive
    from kgreport.retrieval.records import Case
    from kgreport.usecases.reporting import open_report_writer
    from kgreport.usecases.services import Services
    from kgreport.usecases.settings import Settings

    cases = [c for c in open_archive(args.archive, None, split="dev") if isinstance(c, Case) and c.images]
    cases = cases[: args.images + 1]
    started = time.perf_counter()
    services = Services(Settings())
    writer = open_report_writer(services, args.index, args.generator)
    load = time.perf_counter() - started
    writer.config = replace(writer.config, abstain_below=None, lookup_tokens=args.lookup)
    rng = random.Random(0)
    notes = [
        simulate_notes(found, rng) or "no acute findings"
        for found in services.finding_extractor.extract_many([c.report.findings for c in cases])
    ]
    writer.write(cases[0].images[0].path)  # warm-up: first-call allocations, lazy imports
    seconds: dict[str, list[float]] = {"image": [], "notes": []}
    stages: list[dict[str, float]] = []
    texts = []
    for case, typed in zip(cases[1:], notes[1:], strict=True):
        for mode, given in (("image", None), ("notes", typed)):
            started = time.perf_counter()
            report = writer.write(case.images[0].path, given, max_new_tokens=args.max_new_tokens)
            seconds[mode].append(time.perf_counter() - started)
            stages.append(dict(writer.stages))
            texts.append(report.as_text())
    forwards = sum(s.get("forwards", 0) for s in stages)
    return {
        "load_seconds": round(load, 2),
        "reports": sum(len(v) for v in seconds.values()),
        **{f"{mode}_p50_seconds": round(statistics.median(v), 2) for mode, v in seconds.items()},
        **{f"{mode}_p95_seconds": round(_percentile(v, 0.95), 2) for mode, v in seconds.items()},
        "median_tokens": statistics.median(s.get("tokens", 0) for s in stages),
        "tokens_per_forward": round(sum(s.get("tokens", 0) for s in stages) / max(1, forwards), 2),
        "draft_tokens_accepted_per_forward": round(sum(s.get("accepted", 0) for s in stages) / max(1, forwards), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
        "stage_p50_seconds": {
            k: round(statistics.median(s.get(k, 0.0) for s in stages), 3)
            for k in ("evidence", "prefill", "generate", "post_check")
        },
        "floors": {
            "prompt_tokens": _longest_prompt(writer),
            **llm_floors(writer.generator.llm, _longest_prompt(writer)),
        },
        "texts": texts,
    }


def _longest_prompt(writer: Any) -> int:
    """Tokens of the longest prompt: chat template and instruction, soft tokens, the full evidence budget."""
    generator = writer.generator
    before, after = generator._prompt_ids("")
    return len(before) + len(after) + generator.config.fusion.soft_tokens + writer.config.prompt_budget


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
    parser.add_argument("--max-new-tokens", type=int, default=140)
    parser.add_argument("--lookup", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--settings", default=",".join(SETTINGS), help="which of: " + ", ".join(SETTINGS))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "report_speed.json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return

    results: dict[str, Any] = {}
    for name in args.settings.split(","):
        int8, lookup = SETTINGS[name]
        argv = [
            sys.executable,
            "-m",
            "kgreport.benchmarks.report_speed",
            "--child",
            "--lookup",
            str(lookup),
            *sys.argv[1:],
        ]
        done = subprocess.run(
            argv, env={**os.environ, "KGREPORT_REPORT_INT8": int8}, capture_output=True, text=True, check=True
        )
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, {k: v for k, v in results[name].items() if k != "texts"})
    comparison: dict[str, Any] = {}
    if {"speculative", "plain"} <= results.keys():
        same = [a == b for a, b in zip(results["speculative"]["texts"], results["plain"]["texts"], strict=True)]
        comparison = {
            "identical_reports": f"{sum(same)}/{len(same)}",
            **{
                f"plain_over_speculative_{mode}_p50": round(
                    results["plain"][f"{mode}_p50_seconds"] / results["speculative"][f"{mode}_p50_seconds"], 2
                )
                for mode in ("image", "notes")
            },
        }
        print(comparison)
    for result in results.values():
        result.pop("texts", None)
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
            "comparison": comparison,
            "training_seconds_per_epoch": per_epoch and round(per_epoch, 1),
            "training_examples_per_epoch": examples,
        },
    )


if __name__ == "__main__":
    main()
