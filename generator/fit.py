"""Fitting the refiner: examples in, fusion + LoRA out, dev loss picking the checkpoint.

This half of training needs only torch, transformers and peft, not the index, the graph or the
encoders: `generator.training` builds the examples where the archive is (a CPU box will do), saves
them with `save_examples`, and a GPU box fits them:

    python -m generator.fit --examples examples.npz --init data/models/report-writer --out runs/w --device cuda

An examples file is one `.npz`: the float vectors as arrays and every text field as JSON, so it loads
without pickle and is safe to take from another machine.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from kgreport.errors import InvalidInput
from kgreport.generator.config import TrainConfig as TrainConfig  # its home is the config records
from kgreport.generator.model import Batch, GeneratorConfig, ReportGenerator
from kgreport.json_types import JsonMapping, JsonObject, UncheckedJson
from kgreport.retrieval.device import resolve_device

EXAMPLES_FORMAT = "kgreport-refiner-examples/1"
_TEXT_FIELDS = ("case_id", "image_id", "prompt", "target", "cited", "kind", "draft", "features", "usable")


class ExamplesFileError(InvalidInput):
    """An examples file that cannot be read; the message names the file and what is wrong."""

    code = "examples_unreadable"


@dataclass
class Example:
    case_id: str
    image_id: str
    image: np.ndarray  # (image_dim,)
    texts: np.ndarray  # (k, text_dim), zero rows where fewer cases were retrieved
    mask: np.ndarray  # (k,) bool
    prompt: str
    target: str
    cited: tuple[str, ...] = ()  # the retrieved case ids, in rank order
    kind: str = "edit"
    draft: str = ""
    # Edit examples: the draft's confidence features, and whether it was usable (`generator.confidence`).
    features: dict[str, float] | None = None
    usable: bool | None = None


def collate(
    examples: Sequence[Example], *, with_targets: bool = True, drop_side: float = 0.0, rng: random.Random | None = None
) -> Batch:
    """A batch; with `drop_side` > 0 each example loses its image or its texts with that probability each,
    never both. A dropped side is zeroed, not masked: a masked text side pins the gate at 1 whatever the
    gate network says, so only an uninformative side teaches the network to lean on the other one."""
    images = np.stack([e.image for e in examples]).astype(np.float32)
    texts = np.stack([e.texts for e in examples]).astype(np.float32)
    if drop_side > 0:
        rng = rng or random.Random(0)
        for i in range(len(examples)):
            roll = rng.random()
            if roll < drop_side:
                images[i] = 0.0
            elif roll < 2 * drop_side:
                texts[i] = 0.0
    return Batch(
        image=torch.from_numpy(images),
        texts=torch.from_numpy(texts),
        mask=torch.from_numpy(np.stack([e.mask for e in examples])),
        prompts=[e.prompt for e in examples],
        targets=[e.target for e in examples] if with_targets else None,
    )


@dataclass
class TrainSummary:
    steps: int = 0
    examples_seen: int = 0
    best_dev_loss: float = math.inf
    best_step: int = 0
    dev_losses: list[tuple[int, float]] = field(default_factory=list)
    train_losses: list[tuple[int, float]] = field(default_factory=list)
    mean_gate_dev: float | None = None
    seconds: float = 0.0
    seconds_per_epoch: float | None = None

    def as_json(self) -> JsonObject:
        return asdict(self)


def total_steps(n_examples: int, config: TrainConfig) -> int:
    """Optimiser steps a run over `n_examples` takes: its epochs, or `max_steps` if that comes first."""
    all_epochs = math.ceil(n_examples / config.batch_size) * config.epochs
    return min(config.max_steps or all_epochs, all_epochs)


def _loss(generator: ReportGenerator, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The generator's loss on its own device; bf16 autocast on CUDA (the CPU stays float32)."""
    device = generator.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return generator.loss(batch.to(device))


@torch.no_grad()
def dev_loss(generator: ReportGenerator, examples: Sequence[Example], batch_size: int) -> tuple[float, float]:
    """(mean loss, mean gate) over `examples`."""
    generator.eval()
    losses, gates = [], []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        loss, gate = _loss(generator, collate(chunk))
        losses.append(loss.item() * len(chunk))
        gates += gate.tolist()
    generator.train()
    return sum(losses) / max(1, len(examples)), float(np.mean(gates)) if gates else 0.0


def train(
    generator: ReportGenerator,
    train_examples: Sequence[Example],
    dev_examples: Sequence[Example],
    config: TrainConfig,
    out_dir: Path,
    progress: Callable[[int, float], None] | None = None,
) -> TrainSummary:
    """Fit fusion and LoRA; the checkpoint with the lowest dev loss is saved to `out_dir`."""
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    generator.to(resolve_device(config.device))
    lora = [p for n, p in generator.named_parameters() if p.requires_grad and not n.startswith("fusion.")]
    optimiser = torch.optim.AdamW(
        [{"params": lora, "lr": config.lora_lr}, {"params": generator.fusion.parameters(), "lr": config.fusion_lr}],
        weight_decay=config.weight_decay,
    )
    total = total_steps(len(train_examples), config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: max(0.05, 1 - step / max(1, total)))
    summary = TrainSummary()
    started = time.perf_counter()

    def out_of_time() -> bool:
        return config.max_minutes is not None and time.perf_counter() - started > 60 * config.max_minutes

    def evaluate() -> None:
        loss, gate = dev_loss(generator, dev_examples, config.batch_size)
        summary.dev_losses.append((summary.steps, round(loss, 4)))
        if loss < summary.best_dev_loss:
            summary.best_dev_loss, summary.best_step, summary.mean_gate_dev = loss, summary.steps, gate
            generator.save(out_dir)

    if config.evaluate_at_start:
        evaluate()
    generator.train()
    order = list(range(len(train_examples)))
    for _epoch in range(config.epochs):
        epoch_started = time.perf_counter()
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            if summary.steps >= total or out_of_time():
                break
            chunk = [train_examples[i] for i in order[start : start + config.batch_size]]
            loss, _ = _loss(generator, collate(chunk, drop_side=config.drop_side, rng=rng))
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(generator.trainable_parameters(), 1.0)
            optimiser.step()
            scheduler.step()
            summary.steps += 1
            summary.examples_seen += len(chunk)
            summary.train_losses.append((summary.steps, round(loss.item(), 4)))
            if progress:
                progress(1, loss.item())
            if summary.steps % config.eval_every == 0:
                evaluate()
        summary.seconds_per_epoch = time.perf_counter() - epoch_started
        if summary.steps >= total or out_of_time():
            break
    if not summary.dev_losses or summary.dev_losses[-1][0] != summary.steps:
        evaluate()
    summary.seconds = time.perf_counter() - started
    return summary


def save_examples(path: Path, splits: Mapping[str, Sequence[Example]], meta: JsonMapping) -> Path:
    """Write `splits` (e.g. train and dev) and `meta` (index, encoders, writer settings) to one `.npz`."""
    arrays: dict[str, np.ndarray] = {}
    texts: dict[str, list[JsonObject]] = {}
    for name, examples in splits.items():
        if not examples:
            raise ExamplesFileError(f"split {name!r} has no examples")
        arrays[f"{name}.image"] = np.stack([e.image for e in examples]).astype(np.float32)
        arrays[f"{name}.texts"] = np.stack([e.texts for e in examples]).astype(np.float32)
        arrays[f"{name}.mask"] = np.stack([e.mask for e in examples]).astype(bool)
        texts[name] = [{k: getattr(e, k) for k in _TEXT_FIELDS} for e in examples]
    header = {"format": EXAMPLES_FORMAT, "meta": meta, "splits": texts}
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    with staging.open("wb") as handle:  # np.savez on a path would append ".npz" to the staging name
        np.savez_compressed(handle, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)
    staging.replace(path)  # atomic: a crash never leaves a half-written file under the real name
    return path


def load_examples(path: Path) -> tuple[dict[str, list[Example]], UncheckedJson]:
    """(split name → examples, meta) from a file written by `save_examples`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(data["header"].tobytes().decode())
            if header.get("format") != EXAMPLES_FORMAT:
                raise ExamplesFileError(f"{path}: format {header.get('format')!r}, expected {EXAMPLES_FORMAT!r}")
            splits = {}
            for name, rows in header["splits"].items():
                images, vectors, masks = data[f"{name}.image"], data[f"{name}.texts"], data[f"{name}.mask"]
                if not len(rows) == len(images) == len(vectors) == len(masks):
                    raise ExamplesFileError(f"{path}: split {name!r} has {len(rows)} texts but {len(images)} vectors")
                splits[name] = [
                    Example(image=images[i], texts=vectors[i], mask=masks[i], **{**row, "cited": tuple(row["cited"])})
                    for i, row in enumerate(rows)
                ]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # truncated or foreign files
        if isinstance(err, ExamplesFileError):
            raise
        raise ExamplesFileError(f"{path}: not a readable examples file ({type(err).__name__}: {err})") from err
    return splits, header["meta"]


def main(argv: Sequence[str] | None = None) -> None:
    """Fit a refiner from an examples file; prints the run's summary as JSON."""
    parser = argparse.ArgumentParser(prog="python -m generator.fit", description=main.__doc__)
    parser.add_argument("--examples", type=Path, required=True, help="file written by save_examples")
    parser.add_argument("--init", type=Path, required=True, help="trained writer folder to go on from")
    parser.add_argument("--out", type=Path, required=True, help="folder for the fitted fusion and adapters")
    parser.add_argument("--llm", default=None, help="base LLM (.gguf or folder); default: the one --init names")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".kgreport" / "llm")
    defaults = TrainConfig()
    for name in ("epochs", "batch_size", "max_steps", "eval_every", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("lora_lr", "fusion_lr", "drop_side", "max_minutes"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    parser.add_argument("--device", default=defaults.device, choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)
    splits, meta = load_examples(args.examples)
    config = TrainConfig(
        **{k: getattr(args, k) for k in ("epochs", "batch_size", "max_steps", "eval_every", "seed")},
        **{k: getattr(args, k) for k in ("lora_lr", "fusion_lr", "drop_side", "max_minutes", "device")},
        evaluate_at_start=True,
    )
    generator = ReportGenerator.load(args.init, args.cache_dir, llm=args.llm, merge=False, trainable=True)
    # --llm says where the base model is on this machine; the writer saved still names the one it was given.
    named = GeneratorConfig.from_json(json.loads((args.init / "generator.json").read_text())).llm
    generator.config = replace(generator.config, llm=named)
    summary = train(generator, splits["train"], splits["dev"], config, args.out)
    device = resolve_device(config.device)
    record = {
        "examples": {"file": str(args.examples), **{k: len(v) for k, v in splits.items()}, "meta": meta},
        "training": asdict(config),
        "result": summary.as_json(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    (args.out / "fit.json").write_text(json.dumps(record, indent=2))
    for name in ("writer.json", "confidence.json"):  # settings and draft confidence do not depend on the LLM
        if (args.init / name).is_file() and args.init.resolve() != args.out.resolve():
            shutil.copyfile(args.init / name, args.out / name)
    print(json.dumps({k: record[k] for k in ("device", "torch")} | {"result": summary.as_json()}))


if __name__ == "__main__":
    main()
