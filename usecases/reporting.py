"""Writing a report: a trained writer loaded once (`load_report_writer`), put over an index
(`writer_for_index`), and asked one typed `ReportRequest` at a time, alike by the CLI and the service.

Training the writer is `usecases.training`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from kgreport.errors import Unavailable
from kgreport.generator.confidence import Calibration
from kgreport.generator.config import WriterConfig
from kgreport.generator.evidence import EvidenceBuilder
from kgreport.generator.model import GeneratorConfig, ReportGenerator
from kgreport.generator.pipeline import ReportWriter
from kgreport.generator.report import Report
from kgreport.generator.source_weights import SourceWeights
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


def archive_cases(archive: Path, fmt: str | None, split: str, limit: int | None) -> list[Case]:
    """The cases of one split of an archive (what it skips is not needed here)."""
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


def read_card(folder: Path) -> UncheckedJson:
    """A trained writer's `training.json` ({} when it has none)."""
    path = folder / "training.json"
    return json.loads(path.read_text()) if path.is_file() else {}


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
    check_encoders(folder, services)
    generator = ReportGenerator.load(
        folder,
        services.llm_cache_dir,
        llm=services.settings.llm or None,
        quantize=services.settings.report_int8,
        device=services.device,
    )
    card = read_card(folder)
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


def check_encoders(folder: Path, services: Services) -> None:
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


@dataclass(frozen=True)
class ReportRequest:
    """One report to write: the image, and in notes mode the radiologist's notes (shorthand allowed).

    `max_new_tokens` bounds the decoding; None leaves it to the trained writer's config (`writer.json`),
    in every front end alike."""

    image: Path
    notes: str | None = None
    max_new_tokens: int | None = None


@dataclass(frozen=True)
class WrittenReport:
    """A report and how long it took to write."""

    index: str
    report: Report
    seconds: float

    def as_json(self) -> JsonObject:
        return {
            "index": self.index,
            "report": self.report.as_json(),
            "text": self.report.as_text(),
            "seconds": round(self.seconds, 3),
        }


def write_report(writer: ReportWriter, index: str, request: ReportRequest) -> WrittenReport:
    """The grounded report for `request` by `writer` (over `index`)."""
    started = time.perf_counter()
    report = writer.write(request.image, request.notes, max_new_tokens=request.max_new_tokens)
    return WrittenReport(index, report, time.perf_counter() - started)
