"""Contrastive training of the CT encoder on an archive's image–caption pairs.

Loss: open_clip's `ClipLoss` (symmetric InfoNCE over the batch) plus cross-entropy of small label
heads (modality and body region; optionally fine location, disease category and ACR pathology class,
with label smoothing for organ-system labels that the anatomy does not decide), which tightens the
embedding's clusters for kNN voting. With `group_by_region` each batch is drawn from one body region,
so the contrastive negatives are other diseases of the same region (hard negatives), not other regions.
After every epoch the model is scored on the dev archive (kNN modality and body-region accuracy with
train as the index, text→image Recall@10 among dev images); the best epoch is kept. Never a test split.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from kgreport.indexing.training.pairs import EncoderTrainingError, TrainingPair
from kgreport.json_types import JsonObject
from kgreport.retrieval.device import resolve_device
from kgreport.retrieval.encoders.ct_clip import CTClip, CTClipConfig, create_model, create_tokenizer, get_config
from kgreport.retrieval.encoders.image_encoder import CTEncoder
from kgreport.retrieval.encoders.transforms import train_transform
from kgreport.retrieval.voting import vote

log = logging.getLogger(__name__)
HEAD_NAMES = ("modality", "body_region")  # the heads every encoder has; the kNN evaluation votes on these
RICH_HEADS = (*HEAD_NAMES, "location", "category", "acr_pathology")
MIN_LABEL_COUNT = 3  # rarer labels get no class of their own: a head cannot learn them from fewer images


@dataclass
class TrainingConfig:
    """Hyper-parameters of one training run."""

    model: str = "ct-mobilenetv2"
    init: str = "imagenet"
    epochs: int = 12
    batch_size: int = 64
    lr: float = 5e-4
    backbone_lr: float = 2e-4
    weight_decay: float = 0.05
    head_weight: float = 0.5
    warmup_steps: int = 20
    max_steps: int | None = None  # cap for smoke runs and tests
    seed: int = 0
    knn_k: int = 10
    heads: tuple[str, ...] = HEAD_NAMES
    label_smoothing: float = 0.0
    text_target: str = "caption"  # see `pairs.pair_text`
    group_by_region: bool = False
    device: str = "auto"


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    seconds: float
    dev: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainingResult:
    encoder: CTEncoder
    config: TrainingConfig
    history: list[EpochResult]
    best_epoch: int
    wall_seconds: float
    n_train: int
    n_dev: int
    device: str = "cpu"

    def summary(self) -> JsonObject:
        return {
            "config": asdict(self.config),
            "device": self.device,
            "best_epoch": self.best_epoch,
            "wall_seconds": round(self.wall_seconds, 1),
            "n_train_pairs": self.n_train,
            "n_dev_pairs": self.n_dev,
            "history": [asdict(h) for h in self.history],
        }


def label_vocab(pairs: list[TrainingPair], heads: tuple[str, ...] = HEAD_NAMES) -> dict[str, list[str]]:
    """Per head, the labels of the training pairs; beyond the core heads, only labels seen often enough."""
    vocab = {}
    for head in heads:
        counts = Counter(str(p.labels[head]) for p in pairs if p.labels.get(head))
        floor = 1 if head in HEAD_NAMES else MIN_LABEL_COUNT
        labels = sorted(label for label, n in counts.items() if n >= floor)
        if len(labels) >= 2:  # a head with one class learns nothing
            vocab[head] = labels
    return vocab


def _label_targets(pairs: list[TrainingPair], vocab: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    """Class indices per head; -100 (ignored by cross-entropy) where a pair has no label."""
    targets = {}
    for head, labels in vocab.items():
        index = {label: i for i, label in enumerate(labels)}
        targets[head] = torch.tensor([index.get(p.labels.get(head) or "", -100) for p in pairs])
    return targets


def evaluate(encoder: CTEncoder, train: list[TrainingPair], dev: list[TrainingPair], k: int = 10) -> dict[str, float]:
    """kNN accuracies (dev queries, train index) and text→image Recall@10 among dev images."""
    if not dev or not train:
        return {}
    train_vecs = encoder.embed_pixels([p.pixels for p in train])
    dev_vecs = encoder.embed_pixels([p.pixels for p in dev])
    sims = dev_vecs @ train_vecs.T
    top = np.argsort(-sims, axis=1)[:, :k]
    result: dict[str, float] = {}
    for head in (*HEAD_NAMES, "location"):
        if not any(p.labels.get(head) for p in dev):
            continue
        correct = [
            vote([train[j].labels[head] for j in row], sims[i, row])[0] == dev[i].labels[head]
            for i, row in enumerate(top)
            if dev[i].labels.get(head)
        ]
        result[f"{head}_acc"] = float(np.mean(correct)) if correct else 0.0
    text_vecs = encoder.embed_texts([p.text for p in dev])
    ranks = np.argsort(-(text_vecs @ dev_vecs.T), axis=1)[:, :10]
    result["text_to_image_r10"] = float(np.mean([i in row for i, row in enumerate(ranks)]))
    result["score"] = float(np.mean([result["modality_acc"], result["body_region_acc"], result["text_to_image_r10"]]))
    return result


def _chunks(order: list[int], batch_size: int) -> list[list[int]]:
    # Drop a last batch smaller than half: contrastive loss on a handful of pairs is noise.
    n = len(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size) if n - i >= max(2, batch_size // 2)]


def _batches(n: int, batch_size: int, rng: random.Random, groups: list[str | None] | None = None) -> list[list[int]]:
    """Shuffled batches of indices; with `groups`, each batch holds one group's items (batches shuffled)."""
    order = list(range(n))
    rng.shuffle(order)
    if groups is None:
        return _chunks(order, batch_size)
    by_group: dict[str, list[int]] = defaultdict(list)
    for i in order:
        by_group[groups[i] or ""].append(i)
    batches = [batch for members in by_group.values() for batch in _chunks(members, batch_size)]
    rng.shuffle(batches)
    return batches


def train_encoder(
    train: list[TrainingPair],
    dev: list[TrainingPair],
    config: TrainingConfig,
    *,
    name: str = "ct-encoder",
    on_step: Callable[[int, int, float], None] | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> TrainingResult:
    """Train, evaluate every epoch on dev, return the best epoch's encoder."""
    if len(train) < 2:
        raise EncoderTrainingError(f"need at least 2 training pairs, got {len(train)}")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    device = resolve_device(config.device)
    arch: CTClipConfig = get_config(config.model)
    arch.heads = label_vocab(train, config.heads)
    model: CTClip = create_model(arch, init=config.init).to(device)
    tokenizer = create_tokenizer(arch)
    augment = train_transform(arch.image_size)
    tokens = tokenizer([p.text for p in train]).to(device)
    targets = {head: t.to(device) for head, t in _label_targets(train, arch.heads).items()}
    groups = [p.labels.get("body_region") for p in train] if config.group_by_region else None
    backbone = list(model.visual.features.parameters())
    backbone_ids = {id(p) for p in backbone}
    rest = [p for p in model.parameters() if id(p) not in backbone_ids]
    optimizer = torch.optim.AdamW(
        [{"params": backbone, "lr": config.backbone_lr}, {"params": rest, "lr": config.lr}],
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = len(_batches(len(train), config.batch_size, random.Random(0), groups))
    total_steps = config.max_steps or steps_per_epoch * config.epochs
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    clip_loss = ClipLoss()

    def set_lr(step: int) -> None:
        warm = min(1.0, (step + 1) / max(1, config.warmup_steps))
        cosine = 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))
        for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base * warm * cosine

    history: list[EpochResult] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch, best_score = 0, -1.0
    started = time.perf_counter()
    step = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        epoch_start, losses = time.perf_counter(), []
        for batch in _batches(len(train), config.batch_size, rng, groups):
            if step >= total_steps:
                break
            set_lr(step)
            images = torch.stack([augment(train[i].pixels) for i in batch]).to(device)
            image_f, text_f, scale = model(images, tokens[batch])
            loss = clip_loss(image_f, text_f, scale)
            for head, logits in model.classify(image_f).items():
                target = targets[head][batch]
                if (target >= 0).any():
                    loss = loss + config.head_weight * F.cross_entropy(
                        logits, target, ignore_index=-100, label_smoothing=config.label_smoothing
                    )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # CLIP's clamp: temperature never below 1/100
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
            step += 1
            if on_step:
                on_step(step, total_steps, losses[-1])
        model.eval()
        encoder = CTEncoder(copy.deepcopy(model).cpu(), name)  # evaluated and kept on the CPU, as served
        result = EpochResult(
            epoch,
            float(np.mean(losses)) if losses else float("nan"),
            round(time.perf_counter() - epoch_start, 1),
            evaluate(encoder, train, dev, config.knn_k),
        )
        history.append(result)
        if on_epoch:
            on_epoch(result)
        score = result.dev.get("score", -result.train_loss)
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if step >= total_steps:
            break
    model = model.cpu()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return TrainingResult(
        CTEncoder(model, name),
        config,
        history,
        best_epoch,
        time.perf_counter() - started,
        len(train),
        len(dev),
        where,
    )
