"""Training the refiner: examples from an indexed archive, fusion + LoRA fitted together.

The refiner edits a draft into a report. An example is one image of a case: its CT-encoder vector, the top-k
cases the searcher retrieves for it (the leakage guard keeps its own case and patient out), their stored
report vectors, and a prompt with the evidence and the draft. Three kinds, one of each per image:

- `edit`: the draft is the retrieved report that the pipeline would choose (`generator.draft`);
- `repair`: the draft is the reference damaged in one known way (`generator.repairs`), and the evidence
  lists the reference's findings: the answer is recoverable from the input;
- `notes`: the draft is shorthand notes simulated from the reference's findings (`generator.notes`), and
  the cases are found by image and notes together, as `kgreport report --notes` finds them.

The answer is the reference: "Findings: <the image's caption> <the case's findings>" then
"Impression: <its impression or diagnosis>", cut to word budgets. While training, the image or the texts are
dropped at random (`TrainConfig.drop_side`) so the fusion gate learns to weigh both rather than collapse onto
one. After every `eval_every` steps and at the end of each epoch the mean loss on dev examples picks the
checkpoint kept (never a test split).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from generator.confidence import USABLE_F1
from generator.config import WriterConfig
from generator.draft import draft_text
from generator.evidence import (
    CLAIM_STATUSES,
    CaseEvidence,
    DraftSource,
    EvidenceBuilder,
    ImageEvidence,
    collect_evidence,
)
from generator.model import Batch, ReportGenerator
from generator.notes import prepare_notes, simulate_notes
from generator.refine import choose_draft
from generator.repairs import damage
from generator.report import split_sentences
from retrieval.device import resolve_device
from retrieval.records import Case, CaseImage

if TYPE_CHECKING:
    from knowledge.extraction.extractor import Finding

KINDS = ("edit", "repair", "notes")


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


def reference_report(case: Case, image: CaseImage, config: WriterConfig | None = None) -> str:
    """What the refiner learns to produce for `image`: its caption and its case's findings, then impression."""
    config = config or WriterConfig()
    findings = " ".join(x.strip() for x in (image.caption, case.report.findings) if x and x.strip())
    impression = (case.report.impression or case.report.diagnosis).strip()
    return draft_text(
        findings, impression, findings_words=config.findings_words, impression_words=config.impression_words
    )


def _example(
    case: Case, image: CaseImage, found: ImageEvidence, prompt: str, target: str, kind: str, draft: str
) -> Example:
    return Example(
        case_id=case.case_id,
        image_id=image.image_id,
        image=found.vector,
        texts=found.texts,
        mask=found.mask,
        prompt=prompt,
        target=target,
        cited=tuple(c.case_id for c in found.evidence.cases),
        kind=kind,
        draft=draft,
    )


def build_examples(
    cases: Sequence[Case],
    builder: EvidenceBuilder,
    config: WriterConfig,
    progress: Callable[[int], None] | None = None,
    *,
    images_per_case: int | None = None,
    kinds: Sequence[str] = KINDS,
    seed: int = 0,
) -> list[Example]:
    """Examples of each of `kinds` for every readable image of `cases` (the first `images_per_case` of each,
    if given); unreadable images are skipped."""
    rng = random.Random(seed)
    foreign = [s for c in cases for s in split_sentences(c.report.findings)[:3]]
    examples = []
    for case in cases:
        for image in case.images[:images_per_case]:
            try:
                found = builder.for_image(image.path)
            except (OSError, ValueError):
                continue
            target = reference_report(case, image, config)
            findings, _, impression = target.removeprefix("Findings: ").partition("\nImpression: ")
            stated = builder.extractor.extract_many([f"{findings} {impression}"])[0]
            if "edit" in kinds and found.hits:
                choice = choose_draft(found, config, builder.image_text_scores(found))
                example = _example(
                    case,
                    image,
                    found,
                    builder.prompt(found.evidence, choice.source).text,
                    target,
                    "edit",
                    choice.source.text,
                )
                example.features = choice.features
                example.usable = present_f1(choice.chosen.present, claimed(stated)) >= USABLE_F1
                examples.append(example)
            if "repair" in kinds and (damaged := damage(findings, rng, [s for s in foreign if s not in findings])):
                draft = DraftSource("case", draft_text(damaged[0], impression), case.case_id)
                own = CaseEvidence(case.case_id, 1.0, findings, impression)
                voted = collect_evidence(
                    [own, *found.evidence.cases],
                    builder.extractor,
                    builder.graph,
                    index=builder.index,
                    modality=found.evidence.modality,
                    body_region=found.evidence.body_region,
                )
                shown = replace(voted, cases=tuple(c for c in voted.cases if c.case_id != case.case_id))
                examples.append(
                    _example(case, image, found, builder.prompt(shown, draft).text, target, "repair", draft.text)
                )
            if "notes" in kinds and (notes := simulate_notes(stated, rng)):
                prepared = prepare_notes(notes, config.max_notes_chars)
                assert prepared is not None
                hybrid = builder.for_image(image.path, text=prepared.expanded)
                draft = DraftSource("notes", prepared.expanded)
                examples.append(
                    _example(case, image, hybrid, builder.prompt(hybrid.evidence, draft).text, target, "notes", notes)
                )
        if progress:
            progress(1)
    return examples


def claimed(findings: Sequence[Finding]) -> frozenset[str]:
    """The concepts a text states present or possible."""
    return frozenset(f.concept_id for f in findings if f.status in CLAIM_STATUSES)


def present_f1(a: frozenset[str], b: frozenset[str]) -> float:
    """F1 of two sets of stated concepts; two empty sets agree."""
    return 2 * len(a & b) / (len(a) + len(b)) if a or b else 1.0


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
    drop_side: float = 0.15  # per example: image dropped with this probability, texts with the same
    device: str = "auto"  # auto (CUDA when present), cpu or cuda; CUDA runs in bf16 autocast


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


def on_device(batch: Batch, device: torch.device) -> Batch:
    return replace(batch, image=batch.image.to(device), texts=batch.texts.to(device), mask=batch.mask.to(device))


def _loss(generator: ReportGenerator, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The generator's loss on its own device; bf16 autocast on CUDA (the CPU stays float32)."""
    device = next(generator.fusion.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return generator.loss(on_device(batch, device))


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
            if summary.steps >= total:
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
        if summary.steps >= total:
            break
    if not summary.dev_losses or summary.dev_losses[-1][0] != summary.steps:
        evaluate()
    summary.seconds = time.perf_counter() - started
    return summary
