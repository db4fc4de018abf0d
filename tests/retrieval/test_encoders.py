"""Real models (tiny configs where training is involved): CT CLIP, its save/load, open_clip local checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from open_clip.loss import ClipLoss

from kgreport.retrieval.encoders.ct_clip import (
    create_model,
    create_tokenizer,
    get_config,
    imagenet_mobilenet_v2_weights,
    list_configs,
)
from kgreport.retrieval.encoders.frozen import frozen_for_inference
from kgreport.retrieval.encoders.image_encoder import CTEncoder, EncoderLoadError, OpenClipEncoder, load_image_encoder

REPO = Path(__file__).resolve().parents[2]


def _pixels(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (80, 96), dtype=np.uint8) for _ in range(n)]


def test_bundled_configs_are_listed_and_unknown_names_rejected() -> None:
    assert {"ct-mobilenetv2", "ct-tiny"} <= set(list_configs())
    with pytest.raises(ValueError, match="unknown CT encoder config"):
        get_config("ct-nonexistent")


def test_imagenet_init_loads_the_packaged_torchvision_weights() -> None:
    model = create_model("ct-mobilenetv2", init="imagenet")
    state = torch.load(imagenet_mobilenet_v2_weights(), map_location="cpu", weights_only=True)
    assert torch.equal(model.visual.features[0][0].weight, state["features.0.0.weight"])
    scratch = create_model("ct-mobilenetv2", init="scratch")
    assert not torch.equal(scratch.visual.features[0][0].weight, state["features.0.0.weight"])


def test_a_training_step_lowers_the_contrastive_loss() -> None:
    torch.manual_seed(0)
    config = get_config("ct-tiny")
    model = create_model(config, init="scratch")
    tokens = create_tokenizer(config)(
        [f"ct image number {i} of the {w}" for i, w in enumerate(["head", "chest", "abdomen", "spine"] * 2)]
    )
    images = torch.randn(8, 3, config.image_size, config.image_size)
    loss_fn = ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()  # batch-norm in training mode for both measurements, so they are comparable
    with torch.no_grad():
        first = loss_fn(*model(images, tokens)).item()
    for _ in range(30):
        loss = loss_fn(*model(images, tokens))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        last = loss_fn(*model(images, tokens)).item()
    assert last < first * 0.5, (first, last)


def test_encoder_embeds_normalised_vectors_and_round_trips(tmp_path: Path) -> None:
    config = get_config("ct-tiny")
    config.heads = {"modality": ["CT", "MR"]}
    encoder = CTEncoder(create_model(config, init="scratch"), "tiny")
    vectors = encoder.embed_pixels(_pixels(3))
    assert vectors.shape == (3, config.embed_dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    texts = encoder.embed_texts(["axial ct of the chest", "mr brain"])
    assert texts.shape == (2, config.embed_dim)
    encoder.save(tmp_path / "enc", note="test")
    loaded = load_image_encoder(tmp_path / "enc")
    assert isinstance(loaded, CTEncoder) and loaded.info["note"] == "test"
    assert np.allclose(loaded.embed_pixels(_pixels(3)), vectors, atol=5e-3)  # fp16 storage
    probs = loaded.classify(vectors)["modality"]
    assert set(probs[0]) == {"CT", "MR"} and abs(sum(probs[0].values()) - 1) < 1e-5


def test_images_go_through_a_frozen_tower_equal_to_the_eager_model() -> None:
    encoder = load_image_encoder(REPO / "data" / "models" / "ct-encoder")
    assert isinstance(encoder, CTEncoder)
    encoder.batch_size = 4  # 6 slices: a full batch and a part one
    slices = _pixels(6, seed=1)
    vectors = encoder.embed_pixels(slices)
    assert isinstance(encoder._image_tower, torch.jit.ScriptModule), "the bundled tower freezes"
    with torch.no_grad():
        batch = torch.stack([encoder._transform(s) for s in slices])
        eager = encoder.model.encode_image(batch).numpy()
    assert np.allclose(vectors, eager, atol=1e-5)


def test_a_network_that_cannot_be_traced_runs_eagerly(caplog: pytest.LogCaptureFixture) -> None:
    class Named(torch.nn.Module):  # a dict output: tracing refuses it
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"double": x * 2}

    network = Named()
    with caplog.at_level("WARNING"):
        forward = frozen_for_inference(network, torch.ones(1, 3))
    assert forward is network and "running it eagerly" in caplog.text
    assert torch.equal(forward(torch.ones(2, 3))["double"], torch.full((2, 3), 2.0))


def test_bad_encoder_paths_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(EncoderLoadError, match="not found"):
        load_image_encoder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderLoadError, match="neither a kgreport encoder"):
        load_image_encoder(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "kgreport_encoder.json").write_text("{not json")
    with pytest.raises(EncoderLoadError, match="cannot read encoder description"):
        load_image_encoder(bad)


def test_user_open_clip_checkpoint_from_a_local_folder(tmp_path: Path) -> None:
    """A user's own open_clip model (e.g. BiomedCLIP) is loaded from a folder, never from a hub."""
    import open_clip

    model_cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    folder = tmp_path / "my-clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
    with pytest.raises(EncoderLoadError, match="no weights file"):
        load_image_encoder(folder)
    reference = open_clip.CLIP(**model_cfg)
    torch.save(reference.state_dict(), folder / "open_clip_pytorch_model.bin")
    encoder = load_image_encoder(f"local-dir:{folder}")
    assert isinstance(encoder, OpenClipEncoder) and encoder.dim == 32
    vectors = encoder.embed_pixels(_pixels(2))
    assert vectors.shape == (2, 32)
    with torch.no_grad():
        expected = reference.eval().encode_text(encoder.tokenizer(["lung"]))
    assert np.allclose(
        encoder.embed_texts(["lung"]), torch.nn.functional.normalize(expected, dim=-1).numpy(), atol=1e-5
    )
