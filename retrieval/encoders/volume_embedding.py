"""One vector per image or volume.

A 2D image is one slice. A 3D volume (CT series, NIfTI) is embedded from K evenly spaced, windowed
axial slices whose unit vectors are averaged and re-normalised. Mean pooling keeps the volume in the
same space as single 2D images (so a volume query finds 2D priors and vice versa), does not depend on
slice order or count, and a slice full of air or artefact pulls the mean only by 1/K.
"""

from __future__ import annotations

import numpy as np

from kgreport.retrieval.encoders.image_encoder import ImageEncoder
from kgreport.retrieval.imaging import DEFAULT_SLICES, DecodedImage, to_slices


def pool_slices(vectors: np.ndarray) -> np.ndarray:
    """Mean of unit vectors, re-normalised to unit length."""
    mean = vectors.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm if norm > 0 else mean).astype(np.float32)


def embed_decoded(
    encoder: ImageEncoder, images: list[DecodedImage], *, k: int = DEFAULT_SLICES, window: str | None = None
) -> np.ndarray:
    """(n, dim) vectors for decoded images/volumes, slices of all of them encoded in one batch."""
    slices: list[np.ndarray] = []
    owners: list[int] = []
    for i, image in enumerate(images):
        for s in to_slices(image, k=k, window=window):
            slices.append(s)
            owners.append(i)
    if not images:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    vectors = encoder.embed_pixels(slices)
    owner = np.asarray(owners)
    return np.stack([pool_slices(vectors[owner == i]) for i in range(len(images))])
