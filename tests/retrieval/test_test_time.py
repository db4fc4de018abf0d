"""Flip-averaged query embeddings with the bundled encoder: mirror-invariant, unit length, heads kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kgreport.retrieval.encoders.image_encoder import CTEncoder
from kgreport.retrieval.encoders.test_time import FlipAveragedEncoder

REPO = Path(__file__).resolve().parents[2]


def test_a_slice_and_its_mirror_embed_alike() -> None:
    encoder = CTEncoder.load(REPO / "data" / "models" / "ct-encoder")
    tta = FlipAveragedEncoder(encoder)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (96, 80), dtype=np.uint8)
    pixels[:, :30] = 255  # bright on one side: the plain encoder tells the sides apart
    plain = encoder.embed_pixels([pixels, pixels[:, ::-1].copy()])
    averaged = tta.embed_pixels([pixels, pixels[:, ::-1].copy()])
    assert plain[0] @ plain[1] < 0.999
    assert np.allclose(averaged[0], averaged[1], atol=1e-5)
    assert np.allclose(np.linalg.norm(averaged, axis=1), 1.0, atol=1e-5)
    assert tta.dim == encoder.dim and tta.name.endswith("+flip")
    assert set(tta.classify(averaged)) == {"modality", "body_region"}
    assert np.allclose(tta.embed_texts(["ct head"]), encoder.embed_texts(["ct head"]))
