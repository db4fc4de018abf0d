"""Image–text pairs for contrastive training, decoded once and kept in memory as small uint8 arrays."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from kgreport.errors import InvalidInput
from kgreport.json_types import json_text
from kgreport.retrieval.imaging import ImageDecodeError, load_case_image, to_slices
from kgreport.retrieval.records import Case, CaseImage, SkippedItem

log = logging.getLogger(__name__)


class EncoderTrainingError(InvalidInput):
    """Encoder training asked what the data cannot give: an unknown text target, too few image–text pairs."""

    code = "encoder_training_data"


@dataclass(frozen=True)
class TrainingPair:
    """One image (as a central uint8 slice), the text that describes it, and its labels."""

    case_id: str
    image_id: str
    pixels: np.ndarray
    text: str
    labels: dict[str, str | None]
    diagnosis: str


TEXT_TARGETS = ("caption", "report")


def pair_text(image: CaseImage, case: Case, target: str = "caption") -> str:
    """The text an image is trained to match, headed by its modality, plane and region.

    "caption": the image's legend (the case findings when it has none). "report": the case's diagnosis,
    then the legend, then its findings, so that images of one disease share words in the tower's short
    context (64 tokens) rather than only their anatomy.
    """
    if target not in TEXT_TARGETS:
        raise EncoderTrainingError(f"text target must be one of {', '.join(TEXT_TARGETS)}, not {target!r}")
    head = " ".join(x for x in (image.modality, image.plane, image.body_region) if x)
    if target == "report":
        parts = (case.report.diagnosis, image.caption, case.report.findings[:300])
        body = ". ".join(x.strip().rstrip(".") for x in parts if x and x.strip())
    else:
        body = image.caption or case.report.findings[:300] or case.report.diagnosis
    return f"{head}. {body}".strip(". ") if head else body


def acr_pathology(code: object) -> str | None:
    """The ACR index's pathology class of a code ("1.35" → "3": neoplasm); None when it has none.

    ACR codes are `anatomy.pathology`; the pathology field's first digit is its broad disease class."""
    text = str(code or "").strip()
    pathology = text.partition(".")[2]
    digit = pathology[:1]
    return digit if digit.isdigit() else None


def image_labels(image: CaseImage, case: Case) -> dict[str, str | None]:
    """Every label an auxiliary head can learn for `image`: its modality and region, the fine
    location, the case's disease category and ACR pathology class (MedPix names; None where absent)."""
    return {
        "modality": image.modality or case.modality,
        "body_region": image.body_region or case.body_region,
        "location": json_text(image.metadata.get("location")),
        "category": json_text(case.metadata.get("category")),
        "acr_pathology": acr_pathology(json_text(case.metadata.get("acr_code"))),
    }


def _shrink(pixels: np.ndarray, short_side: int) -> np.ndarray:
    """Downscale so the short side is `short_side` (keeps memory small; training crops from this)."""
    h, w = pixels.shape[:2]
    scale = short_side / min(h, w)
    if scale >= 1:
        return pixels
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC))


def load_pairs(
    cases: Iterable[Case | SkippedItem],
    *,
    short_side: int,
    on_item: Callable[[], None] | None = None,
    text_target: str = "caption",
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
                    text=pair_text(image, case, text_target),
                    labels=image_labels(image, case),
                    diagnosis=case.report.diagnosis.strip().lower(),
                )
            )
    return pairs, skipped
