"""`kgreport train-generator`, `calibrate-writer` and `train-encoder`: fit the refiner and the CT encoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kgreport.api.cli.support import (
    CliError,
    load_services,
    out,
    progress_bars,
    progress_console,
    stage_progress,
    user_errors,
)
from kgreport.generator.config import TrainConfig, WriterConfig


def train_generator_cmd(
    index: Annotated[str, typer.Option("--index", "-i", help="index built from the training split")],
    archive: Annotated[Path, typer.Option(help="the archive (train and dev splits)")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the trained report writer")],
    format: Annotated[str | None, typer.Option("--format")] = None,
    split: Annotated[str, typer.Option(help="training split")] = "train",
    dev_split: Annotated[str, typer.Option(help="split that picks the checkpoint")] = "dev",
    limit: Annotated[int | None, typer.Option(help="use only the first N training cases")] = None,
    dev_limit: Annotated[int | None, typer.Option(help="use only the first N dev cases")] = None,
    images_per_case: Annotated[int | None, typer.Option(min=1, help="use only the first N images of a case")] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=10, help="retrieved cases per image")] = WriterConfig.k,
    prompt_budget: Annotated[int, typer.Option(min=64, help="tokens of evidence, draft and instruction")] = (
        WriterConfig.prompt_budget
    ),
    kinds: Annotated[
        str, typer.Option(help="example kinds, comma-separated: edit, repair, notes, hand_notes")
    ] = "edit,repair,notes",
    notes_file: Annotated[
        Path | None,
        typer.Option(help="hand-written notes with their target reports (JSONL) for the hand_notes kind"),
    ] = None,
    drop_side: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="chance to drop the image (and the texts)")
    ] = TrainConfig.drop_side,
    device: Annotated[
        str, typer.Option(help="auto (CUDA when present), cpu or cuda (bf16 autocast)")
    ] = TrainConfig.device,
    epochs: Annotated[int, typer.Option(min=1)] = TrainConfig.epochs,
    batch_size: Annotated[int, typer.Option(min=1)] = TrainConfig.batch_size,
    max_steps: Annotated[int | None, typer.Option(help="stop after N optimiser steps")] = None,
    max_minutes: Annotated[
        float | None,
        typer.Option(min=0, help="stop training after this many minutes (then dev picks the checkpoint as usual)"),
    ] = 80.0,
    eval_every: Annotated[int, typer.Option(min=1, help="dev loss every N steps")] = TrainConfig.eval_every,
    lora_lr: Annotated[float, typer.Option()] = TrainConfig.lora_lr,
    fusion_lr: Annotated[float, typer.Option()] = TrainConfig.fusion_lr,
    init: Annotated[
        Path | None, typer.Option(help="go on training this trained writer (its settings; its dev loss competes)")
    ] = None,
    save_examples: Annotated[
        Path | None, typer.Option(help="also write the examples (.npz) for `python -m generator.fit` elsewhere")
    ] = None,
    examples_only: Annotated[bool, typer.Option(help="build and save the examples, train nothing")] = False,
) -> None:
    """Train the refiner (fusion + LoRA) on an archive against its index; dev picks the checkpoint."""
    from kgreport.usecases.training import SavedExamples, TrainRequestError, TrainWriterRequest, train_writer

    try:
        request = TrainWriterRequest(
            index=index,
            archive=archive,
            out_dir=out_dir,
            fmt=format,
            split=split,
            dev_split=dev_split,
            limit=limit,
            dev_limit=dev_limit,
            images_per_case=images_per_case,
            writer=WriterConfig(k=k, prompt_budget=prompt_budget),
            training=TrainConfig(
                drop_side=drop_side,
                device=device,
                epochs=epochs,
                batch_size=batch_size,
                max_steps=max_steps,
                max_minutes=max_minutes,
                eval_every=eval_every,
                lora_lr=lora_lr,
                fusion_lr=fusion_lr,
            ),
            kinds=tuple(x.strip() for x in kinds.split(",") if x.strip()),
            hand_notes_file=notes_file,
            init=init,
            save_examples_to=save_examples,
            examples_only=examples_only,
        )
    except TrainRequestError as err:
        raise typer.BadParameter(str(err)) from None
    with user_errors(), progress_bars() as bars:
        done = train_writer(load_services(), request, stage_progress(bars))
    out.print_json(json.dumps(done.as_json() if isinstance(done, SavedExamples) else done.summary_json(out_dir)))


def calibrate_writer_cmd(
    index: Annotated[str, typer.Option("--index", "-i", help="index built from the training split")],
    archive: Annotated[Path, typer.Option(help="the archive")],
    generator: Annotated[Path, typer.Option(help="trained refiner folder: its confidence.json is (re)written")],
    split: Annotated[str, typer.Option(help="split the confidence is fitted on (never the one you test on)")] = "train",
    limit: Annotated[int | None, typer.Option(help="use only the first N cases")] = None,
) -> None:
    """Fit the image-only draft's calibrated confidence for a trained refiner (the LLM is not trained)."""
    from kgreport.usecases.training import calibrate_writer

    with user_errors(), progress_bars() as bars:
        progress = stage_progress(bars)
        result = calibrate_writer(
            load_services(), generator, index=index, archive=archive, split=split, limit=limit, progress=progress
        )
    out.print_json(json.dumps(result))


def train_encoder_cmd(
    archive: Annotated[Path, typer.Argument(help="training archive (MedPix folder or manifest)")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the trained encoder")],
    format: Annotated[str | None, typer.Option("--format")] = None,
    split: Annotated[str, typer.Option(help="training split (MedPix)")] = "train",
    dev_split: Annotated[str, typer.Option(help="split used to pick the best epoch")] = "dev",
    dev_archive: Annotated[
        Path | None, typer.Option(help="separate dev archive (default: ARCHIVE's dev split)")
    ] = None,
    model: Annotated[str, typer.Option(help="architecture config name or JSON path")] = "ct-mobilenetv2",
    init: Annotated[str, typer.Option(help="imagenet or scratch")] = "imagenet",
    epochs: Annotated[int, typer.Option(min=1)] = 12,
    batch_size: Annotated[int, typer.Option(min=2)] = 64,
    max_steps: Annotated[int | None, typer.Option(help="stop after N optimiser steps")] = None,
    limit: Annotated[int | None, typer.Option(help="use only the first N training cases")] = None,
    heads: Annotated[
        str,
        typer.Option(help="label heads, comma-separated, of modality, body_region, location, category, acr_pathology"),
    ] = "modality,body_region",
    label_smoothing: Annotated[float, typer.Option(min=0.0, max=0.5, help="label smoothing of the heads")] = 0.0,
    text_target: Annotated[
        str, typer.Option(help="caption (the image's legend) or report (diagnosis, legend, findings)")
    ] = "caption",
    group_by_region: Annotated[
        bool, typer.Option(help="draw each batch from one body region: other diseases as hard negatives")
    ] = False,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda")] = "auto",
) -> None:
    """Train the CT encoder contrastively on an archive's image–caption pairs (dev picks the epoch).

    About 14 minutes for 10 epochs of MedPix train (1,653 images) on 2 CPU cores."""
    from kgreport.indexing.training.encoder_training import RICH_HEADS
    from kgreport.indexing.training.run import run_training

    head_names = tuple(h.strip() for h in heads.split(",") if h.strip())
    with user_errors():
        unknown = sorted(set(head_names) - set(RICH_HEADS))
        if unknown:
            raise CliError(f"unknown heads {unknown}; choose from {', '.join(RICH_HEADS)}")
        summary = run_training(
            archive,
            out_dir,
            fmt=format,
            split=split,
            dev_split=dev_split,
            dev_archive=dev_archive,
            model=model,
            init=init,
            epochs=epochs,
            batch_size=batch_size,
            max_steps=max_steps,
            limit=limit,
            console=progress_console,
            options={
                "heads": head_names,
                "label_smoothing": label_smoothing,
                "text_target": text_target,
                "group_by_region": group_by_region,
                "device": device,
            },
        )
    out.print_json(json.dumps(summary))
