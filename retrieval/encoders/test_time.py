"""Test-time augmentation for query images: a slice and its mirror image embedded, averaged.

The index keeps plain embeddings; only the query is augmented. Averaging with the left–right mirror
makes a query indifferent to which side a lesion is on (similar cases, not laterality, are sought)
at the price of embedding each slice twice.
"""

from __future__ import annotations

import numpy as np

from kgreport.retrieval.encoders.image_encoder import ImageEncoder


class FlipAveragedEncoder:
    """Wraps an image encoder: `embed_pixels` averages each slice with its horizontal mirror."""

    def __init__(self, encoder: ImageEncoder) -> None:
        self.encoder = encoder
        self.name = f"{encoder.name}+flip"
        self.dim = encoder.dim

    def embed_pixels(self, slices: list[np.ndarray]) -> np.ndarray:
        both = self.encoder.embed_pixels(list(slices) + [np.ascontiguousarray(s[:, ::-1]) for s in slices])
        mean = both[: len(slices)] + both[len(slices) :]
        norms = np.linalg.norm(mean, axis=1, keepdims=True)
        return (mean / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self.encoder.embed_texts(texts)

    def classify(self, vectors: np.ndarray) -> dict[str, list[dict[str, float]]]:
        """The wrapped encoder's heads (an encoder without heads has none)."""
        classify = getattr(self.encoder, "classify", None)
        return classify(vectors) if classify is not None else {}
