"""Training the report writer: examples from an indexed archive, fusion + LoRA fitted together.

An example is one image of a case: its CT-encoder vector, the top-k cases the searcher retrieves for it
from the index (the leakage guard keeps its own case and patient out), their stored report vectors,
the prompt built from their evidence, and the reference report: "Findings: <the image's caption>
<the case's findings>" then "Impression: <its impression or diagnosis>", cut to a word budget.

Training minimises the reference report's cross-entropy; after every `eval_every` steps and at the
end of each epoch the mean loss on dev examples picks the checkpoint kept (never a test split).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from generator.evidence import EvidenceBuilder
from generator.model import Batch, ReportGenerator
from retrieval.records import Case, CaseImage

REFERENCE_WORDS = 60  # short reports: the 135M writer learns them better, and each token costs ~45 ms on CPU
IMPRESSION_WORDS = 20


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


def _words(text: str, limit: int) -> str:
    words = text.split()
    return " ".join(words[:limit]) + (" ..." if len(words) > limit else "")


def reference_report(case: Case, image: CaseImage, *, max_words: int = REFERENCE_WORDS) -> str:
    """What the writer learns to produce for `image`: its caption and its case's findings, then impression."""
    findings = " ".join(x.strip() for x in (image.caption, case.report.findings) if x and x.strip())
    impression = (case.report.impression or case.report.diagnosis).strip()
    return f"Findings: {_words(findings, max_words)}\nImpression: {_words(impression, IMPRESSION_WORDS)}"


def build_examples(
    cases: Sequence[Case],
    builder: EvidenceBuilder,
    progress: Callable[[int], None] | None = None,
    *,
    images_per_case: int | None = None,
) -> list[Example]:
    """One example per readable image of `cases` (the first `images_per_case` of each, if given);
    unreadable images are skipped."""
    examples = []
    for case in cases:
        for image in case.images[:images_per_case]:
            try:
                vector, texts, mask, evidence, prompt = builder.for_image(image.path)
            except (OSError, ValueError):
                continue
            examples.append(
                Example(
                    case_id=case.case_id,
                    image_id=image.image_id,
                    image=vector,
                    texts=texts,
                    mask=mask,
                    prompt=prompt.text,
                    target=reference_report(case, image),
                    cited=tuple(c.case_id for c in evidence.cases),
                )
            )
        if progress:
            progress(1)
    return examples


def collate(examples: Sequence[Example], *, with_targets: bool = True) -> Batch:
    return Batch(
        image=torch.from_numpy(np.stack([e.image for e in examples])).float(),
        texts=torch.from_numpy(np.stack([e.texts for e in examples])).float(),
        mask=torch.from_numpy(np.stack([e.mask for e in examples])),
        prompts=[e.prompt for e in examples],
        targets=[e.target for e in examples] if with_targets else None,
    )


@dataclass
class TrainConfig:
    epochs: int = 1
    batch_size: int = 4
    lora_lr: float = 3e-4
    fusion_lr: float = 1e-3
    weight_decay: float = 0.01
    max_steps: int | None = None
    eval_every: int = 100
    seed: int = 0
    # Dev loss before the first step too: a run that goes on from a trained writer keeps it unless it improves.
    evaluate_at_start: bool = False


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

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def total_steps(n_examples: int, config: TrainConfig) -> int:
    """Optimiser steps a run over `n_examples` takes: its epochs, or `max_steps` if that comes first."""
    all_epochs = math.ceil(n_examples / config.batch_size) * config.epochs
    return min(config.max_steps or all_epochs, all_epochs)


@torch.no_grad()
def dev_loss(generator: ReportGenerator, examples: Sequence[Example], batch_size: int) -> tuple[float, float]:
    """(mean loss, mean gate) over `examples`."""
    generator.eval()
    losses, gates = [], []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        loss, gate = generator.loss(collate(chunk))
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
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    lora = [p for n, p in generator.named_parameters() if p.requires_grad and not n.startswith("fusion.")]
    optimiser = torch.optim.AdamW(
        [{"params": lora, "lr": config.lora_lr}, {"params": generator.fusion.parameters(), "lr": config.fusion_lr}],
        weight_decay=config.weight_decay,
    )
    total = total_steps(len(train_examples), config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: max(0.05, 1 - step / max(1, total)))
    summary = TrainSummary()
    started = time.perf_counter()

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
        random.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            if summary.steps >= total:
                break
            chunk = [train_examples[i] for i in order[start : start + config.batch_size]]
            loss, _ = generator.loss(collate(chunk))
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
        if summary.steps >= total:
            break
    if not summary.dev_losses or summary.dev_losses[-1][0] != summary.steps:
        evaluate()
    summary.seconds = time.perf_counter() - started
    return summary
