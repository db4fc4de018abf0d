"""Pixel arrays → normalised tensors for the image tower (evaluation and training variants)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from kgreport.retrieval.encoders.ct_clip import IMAGENET_MEAN, IMAGENET_STD


def to_pil_rgb(pixels: np.ndarray) -> Image.Image:
    """uint8 gray (H, W) or RGB (H, W, 3) → RGB PIL image (gray is replicated: the towers expect 3 channels)."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {pixels.dtype}")
    image = Image.fromarray(pixels)
    return image.convert("RGB")


def eval_transform(image_size: int) -> Callable[[np.ndarray], torch.Tensor]:
    """Resize the short side, centre-crop, normalise: deterministic, used for indexing and queries."""
    pipeline = T.Compose(
        [
            T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    return lambda pixels: pipeline(to_pil_rgb(pixels))


def train_transform(image_size: int) -> Callable[[np.ndarray], torch.Tensor]:
    """Mild augmentation: crops, small rotations and contrast changes. No flips: laterality matters."""
    pipeline = T.Compose(
        [
            T.RandomResizedCrop(
                image_size, scale=(0.6, 1.0), ratio=(0.85, 1.15), interpolation=T.InterpolationMode.BICUBIC
            ),
            T.RandomApply([T.RandomRotation(10)], p=0.5),
            T.ColorJitter(brightness=0.2, contrast=0.2),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    return lambda pixels: pipeline(to_pil_rgb(pixels))
