"""Image–text pairs for contrastive training, decoded once and kept in memory as small uint8 arrays."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from retrieval.imaging import ImageDecodeError, load_case_image, to_slices
from retrieval.records import Case, CaseImage, SkippedItem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingPair:
    """One image (as a central uint8 slice), the text that describes it, and its labels."""

    case_id: str
    image_id: str
    pixels: np.ndarray
    text: str
    labels: dict[str, str | None]
    diagnosis: str


def pair_text(image: CaseImage, case: Case) -> str:
    """The image's legend with its modality, plane and region; the case findings when it has no caption."""
    head = " ".join(x for x in (image.modality, image.plane, image.body_region) if x)
    body = image.caption or case.report.findings[:300] or case.report.diagnosis
    return f"{head}. {body}".strip(". ") if head else body


def _shrink(pixels: np.ndarray, short_side: int) -> np.ndarray:
    """Downscale so the short side is `short_side` (keeps memory small; training crops from this)."""
    h, w = pixels.shape[:2]
    scale = short_side / min(h, w)
    if scale >= 1:
        return pixels
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC))


def load_pairs(
    cases: Iterable[Case | SkippedItem], *, short_side: int, on_item: Callable[[], None] | None = None
) -> tuple[list[TrainingPair], list[SkippedItem]]:
    """Decode every image of every case; unreadable ones are returned as skipped, not raised."""
    pairs: list[TrainingPair] = []
    skipped: list[SkippedItem] = []
    for case in cases:
        if on_item:
            on_item()
        if isinstance(case, SkippedItem):
            skipped.append(case)
            continue
        for image in case.images:
            try:
                decoded = load_case_image(image)
                pixels = to_slices(decoded, k=1)[0]
            except (ImageDecodeError, OSError) as err:
                log.warning("skipping %s: %s", image.path, err)
                skipped.append(SkippedItem(source=str(image.path), reason=str(err)))
                continue
            pairs.append(
                TrainingPair(
                    case_id=case.case_id,
                    image_id=image.image_id,
                    pixels=_shrink(pixels, short_side),
                    text=pair_text(image, case),
                    labels={
                        "modality": image.modality or case.modality,
                        "body_region": image.body_region or case.body_region,
                    },
                    diagnosis=case.report.diagnosis.strip().lower(),
                )
            )
    return pairs, skipped
