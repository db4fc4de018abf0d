"""The GPU path against the CPU path, on one machine that has both: same outputs, and how much faster.

Run it on a machine with a CUDA GPU (it exits with a message on one without). What it checks:

- **Image encoder.** The bundled CT encoder embeds the demo archive's images on the CPU (frozen, traced
  network) and on the GPU (eager network, float32): the largest absolute difference and the lowest cosine
  between the two vectors of an image, and images per second on each (median of `--repeats` passes; the
  encoder's batch of 32). This is the GPU-bound part of an index build; decoding files, FAISS, SQLite and
  the graph stay on the CPU and are not in this figure.
- **Report writer.** The trained writer writes greedy reports for the first `--reports` prompts of an
  examples file (`python -m generator.fit`): evidence vectors, prompt and draft exactly as the pipeline made
  them. CPU float32, GPU float32 and GPU bf16 autocast: whether each GPU report is token for token the CPU's,
  and the seconds per report (median). Retrieval and grounding are CPU work before this and not timed here.
- **Training step.** Seconds per optimiser step of the refiner (fusion + LoRA, batch `--batch-size`), CPU
  float32 against GPU bf16 autocast, median of 3 steps after one warm-up.

Usage: python -m kgreport.benchmarks.gpu_check --examples runs/examples.npz [--writer data/models/report-writer]
       [--llm FILE.gguf] [--out benchmarks/results/gpu_check.json]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from kgreport.benchmarks.results_io import RESULTS, write_result
from kgreport.generator.decoding import DecodingConfig
from kgreport.generator.fit import Example, collate, load_examples
from kgreport.generator.model import ReportGenerator
from kgreport.retrieval.encoders.image_encoder import CTEncoder

REPO = Path(__file__).resolve().parents[1]


def _median_seconds(run: Callable[[], object], repeats: int, *, cuda: bool) -> float:
    """Median wall seconds of `run` after one warm-up; waits for the GPU before each clock read."""
    run()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def check_encoder(folder: Path, images: Sequence[Path], repeats: int) -> dict[str, Any]:
    slices = [np.asarray(Image.open(p).convert("L")) for p in images]
    cpu, gpu = CTEncoder.load(folder, device="cpu"), CTEncoder.load(folder, device="cuda")
    a, b = cpu.embed_pixels(slices), gpu.embed_pixels(slices)
    cpu_s = _median_seconds(lambda: cpu.embed_pixels(slices), repeats, cuda=False)
    gpu_s = _median_seconds(lambda: gpu.embed_pixels(slices), repeats, cuda=True)
    texts = ["axial CT of the chest with a right upper lobe mass", "normal brain MRI"]
    return {
        "images": len(slices),
        "max_abs_diff": float(np.abs(a - b).max()),
        "min_cosine": float((a * b).sum(axis=1).min()),
        "text_max_abs_diff": float(np.abs(cpu.embed_texts(texts) - gpu.embed_texts(texts)).max()),
        "cpu_images_per_s": round(len(slices) / cpu_s, 1),
        "gpu_images_per_s": round(len(slices) / gpu_s, 1),
        "speedup": round(cpu_s / gpu_s, 2),
    }


def _reports(generator: ReportGenerator, examples: Sequence[Example], bf16: bool) -> tuple[list[str], list[float]]:
    decoding = DecodingConfig(max_new_tokens=140, lookup_tokens=10)
    device = generator.device
    texts, seconds = [], []
    for example in examples:
        batch = collate([example], with_targets=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            written, _, _ = generator.generate(batch, decoding, drafts=[example.draft])
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
        texts.append(written[0])
    return texts, seconds


def check_writer(writer: Path, llm: str | None, cache: Path, examples: Sequence[Example]) -> dict[str, Any]:
    runs: dict[str, tuple[list[str], list[float]]] = {}
    for name, device, bf16 in (("cpu", "cpu", False), ("gpu_fp32", "cuda", False), ("gpu_bf16", "cuda", True)):
        generator = ReportGenerator.load(writer, cache, llm=llm, device=device)
        _reports(generator, examples[:1], bf16)  # warm-up: kernels, caches
        runs[name] = _reports(generator, examples, bf16)
        del generator
    reference = runs["cpu"][0]
    return {
        "reports": len(examples),
        **{f"{name}_p50_s": round(statistics.median(s), 3) for name, (_, s) in runs.items()},
        **{
            f"{name}_identical_to_cpu": sum(a == b for a, b in zip(texts, reference, strict=True))
            for name, (texts, _) in runs.items()
            if name != "cpu"
        },
        "speedup_fp32": round(statistics.median(runs["cpu"][1]) / statistics.median(runs["gpu_fp32"][1]), 2),
        "first_report_cpu": reference[0],
    }


def _step_seconds(generator: ReportGenerator, examples: Sequence[Example], device: torch.device) -> float:
    """Median seconds of one optimiser step on `examples` (bf16 autocast on CUDA, as `generator.fit` trains)."""
    optimiser = torch.optim.AdamW(generator.trainable_parameters(), lr=1e-5)
    rng = random.Random(0)

    def step() -> None:
        batch = collate(examples, drop_side=0.15, rng=rng).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss, _ = generator.loss(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    return _median_seconds(step, 3, cuda=device.type == "cuda")


def check_training_step(
    writer: Path, llm: str | None, cache: Path, examples: Sequence[Example], batch_size: int
) -> dict[str, Any]:
    result: dict[str, Any] = {"batch_size": batch_size}
    for device in ("cpu", "cuda"):
        generator = ReportGenerator.load(writer, cache, llm=llm, merge=False, trainable=True, device=device)
        seconds = _step_seconds(generator, examples[:batch_size], torch.device(device))
        result[f"{device}_s_per_step"] = round(seconds, 3)
        del generator
    result["speedup"] = round(result["cpu_s_per_step"] / result["cuda_s_per_step"], 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=Path, required=True, help="examples file (its dev split is used)")
    parser.add_argument("--writer", type=Path, default=REPO / "data" / "models" / "report-writer")
    parser.add_argument("--encoder", type=Path, default=REPO / "data" / "models" / "ct-encoder")
    parser.add_argument("--images", type=Path, default=REPO / "data" / "demo" / "images")
    parser.add_argument("--llm", default=None, help="base LLM .gguf or folder (default: the writer's)")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".kgreport" / "cache" / "llm")
    parser.add_argument("--reports", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_check.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check: this torch sees no CUDA GPU; nothing to compare")
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 on the GPU should mean float32
    torch.backends.cudnn.allow_tf32 = False
    splits, meta = load_examples(args.examples)
    dev = [e for e in splits["dev"] if e.kind == "edit"][: args.reports]
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    result = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "examples": {"file": str(args.examples), "index": meta.get("index"), "dev_edit_prompts": len(dev)},
        "encoder": check_encoder(args.encoder, images, args.repeats),
        "writer": check_writer(args.writer, args.llm, args.cache_dir, dev),
        "training_step": check_training_step(args.writer, args.llm, args.cache_dir, splits["train"], args.batch_size),
    }
    print(result)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
