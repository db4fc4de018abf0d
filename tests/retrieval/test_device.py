"""KGREPORT_DEVICE: one rule for where the encoders and the writer run. GPU paths are guarded, not mocked:
on a machine without CUDA the tests check the clear refusal; with one they check the GPU is used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kgreport.retrieval.device import describe, resolve_device
from kgreport.retrieval.encoders.image_encoder import CTEncoder
from kgreport.usecases.settings import Settings

REPO = Path(__file__).resolve().parents[2]
ENCODER = REPO / "data" / "models" / "ct-encoder"
HAS_CUDA = torch.cuda.is_available()


def test_auto_is_cuda_exactly_when_torch_sees_a_gpu() -> None:
    device = resolve_device("auto")
    assert device.type == ("cuda" if HAS_CUDA else "cpu")
    assert describe(device).startswith(device.type) and describe(torch.device("cpu")) == "cpu"
    assert resolve_device("cpu") == torch.device("cpu")


def test_unknown_devices_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        resolve_device("tpu")
    monkeypatch.setenv("KGREPORT_DEVICE", "gpu")
    with pytest.raises(ValueError, match="device"):
        Settings()


@pytest.mark.skipif(HAS_CUDA, reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        CTEncoder.load(ENCODER, device="cuda")


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_the_encoder_on_the_gpu_matches_the_cpu() -> None:
    slices = [np.asarray(Image.open(p).convert("L")) for p in sorted((REPO / "data/demo/images").iterdir())[:8]]
    on_cpu, on_gpu = CTEncoder.load(ENCODER, device="cpu"), CTEncoder.load(ENCODER, device="cuda")
    assert next(on_gpu.model.parameters()).is_cuda
    np.testing.assert_allclose(on_cpu.embed_pixels(slices), on_gpu.embed_pixels(slices), atol=1e-4)


def test_the_encoder_runs_where_it_is_told() -> None:
    encoder = CTEncoder.load(ENCODER, device="cpu")
    assert encoder.device == torch.device("cpu") and not next(encoder.model.parameters()).is_cuda
    image = np.asarray(Image.open(sorted((REPO / "data/demo/images").iterdir())[0]).convert("L"))
    vectors = encoder.embed_pixels([image])
    assert vectors.shape == (1, encoder.dim) and np.isclose(np.linalg.norm(vectors[0]), 1.0, atol=1e-5)
    assert set(encoder.classify(vectors)) == set(encoder.model.config.heads)
