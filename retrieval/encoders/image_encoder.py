"""Image encoders at inference: the bundled CT encoder, or any open_clip checkpoint a user has locally.

Both turn uint8 pixel arrays (2D slices) into L2-normalised vectors and texts into vectors of the
same space, so one index serves image→image and text→image search.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from kgreport.errors import Unavailable
from kgreport.json_types import JsonObject
from kgreport.retrieval.device import resolve_device
from kgreport.retrieval.encoders.ct_clip import CTClip, CTClipConfig, create_tokenizer
from kgreport.retrieval.encoders.frozen import frozen_for_inference
from kgreport.retrieval.encoders.transforms import eval_transform

ENCODER_FORMAT = "kgreport-ct-clip/1"
ENCODER_FILE = "kgreport_encoder.json"
WEIGHTS_FILE = "model.safetensors"


class EncoderLoadError(Unavailable, ValueError):
    """A checkpoint path that is not a loadable encoder."""

    code = "encoder_unavailable"


class ImageEncoder(Protocol):
    """What the case store and the search need from an image–text encoder."""

    name: str
    dim: int

    def embed_pixels(self, slices: list[np.ndarray]) -> np.ndarray:
        """(n, dim) float32, L2-normalised, one row per uint8 slice."""
        ...

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised, in the image space."""
        ...


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A short hash of a model's weights: two encoders with one name but other weights embed into
    different spaces, and an index must not be searched with the wrong one."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _normalise(features: torch.Tensor) -> np.ndarray:
    features = torch.nn.functional.normalize(features.float(), dim=-1)
    return np.ascontiguousarray(features.cpu().numpy(), dtype=np.float32)


class CTEncoder:
    """The project's own CT encoder (see `ct_clip.py`), in evaluation mode.

    Images go through a frozen copy of the image tower (`frozen.py`), made at the first image: change
    the model's weights after that and wrap it in a new encoder."""

    def __init__(
        self,
        model: CTClip,
        name: str,
        *,
        batch_size: int = 32,
        info: JsonObject | None = None,
        device: str | torch.device = "cpu",
    ):
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = model.eval().to(self.device)
        self.name = name
        self.dim = model.config.embed_dim
        self.batch_size = batch_size
        self.info = info or {}
        self._transform = eval_transform(model.config.image_size)
        self._tokenizer = create_tokenizer(model.config)
        self._image_tower: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._freezing = threading.Lock()

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the weights (see `weights_fingerprint`), recorded in each index built with them."""
        return weights_fingerprint(self.model)

    def _frozen_image_tower(self) -> Callable[[torch.Tensor], torch.Tensor]:
        with self._freezing:  # the service embeds from several threads; freeze once
            if self._image_tower is None:
                size = self.model.config.image_size
                # Freezing folds and prepacks for the CPU's oneDNN; on a GPU the eager network is the fast one.
                self._image_tower = (
                    frozen_for_inference(self.model.visual, torch.zeros(1, 3, size, size))
                    if self.device.type == "cpu"
                    else self.model.visual
                )
        return self._image_tower

    @torch.inference_mode()
    def embed_pixels(self, slices: list[np.ndarray]) -> np.ndarray:
        out = []
        tower = self._image_tower or self._frozen_image_tower()
        for start in range(0, len(slices), self.batch_size):
            batch = torch.stack([self._transform(s) for s in slices[start : start + self.batch_size]])
            out.append(tower(batch.to(self.device)))  # = model.encode_image(batch, normalize=False)
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalise(torch.cat(out))

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokens = self._tokenizer(texts).to(self.device)
        return _normalise(self.model.encode_text(tokens, normalize=False))

    @torch.inference_mode()
    def classify(self, vectors: np.ndarray) -> dict[str, list[dict[str, float]]]:
        """Per auxiliary head, per row: label → probability."""
        features = torch.from_numpy(np.asarray(vectors, dtype=np.float32)).to(self.device)
        result = {}
        for head, logits in self.model.classify(features).items():
            labels = self.model.config.heads[head]
            probs = logits.softmax(-1).cpu().numpy()
            result[head] = [dict(zip(labels, map(float, row), strict=True)) for row in probs]
        return result

    def save(self, folder: str | Path, **info: Any) -> Path:
        """Write `kgreport_encoder.json` + fp16 `model.safetensors` (half the size; no measurable loss)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to(torch.float16).contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE))
        meta = {"format": ENCODER_FORMAT, "name": self.name, "config": self.model.config.to_dict(), **self.info, **info}
        (folder / ENCODER_FILE).write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, device: str | torch.device = "cpu") -> CTEncoder:
        folder = Path(folder)
        meta_file = folder / ENCODER_FILE
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise EncoderLoadError(f"{meta_file}: cannot read encoder description ({err})") from err
        if meta.get("format") != ENCODER_FORMAT:
            raise EncoderLoadError(f"{meta_file}: format {meta.get('format')!r}, expected {ENCODER_FORMAT!r}")
        model = CTClip(CTClipConfig.from_dict(meta["config"]), imagenet_init=False)
        try:
            state = load_file(str(folder / WEIGHTS_FILE))
        except Exception as err:
            raise EncoderLoadError(f"{folder / WEIGHTS_FILE}: cannot read weights ({err})") from err
        missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        if missing or unexpected:
            raise EncoderLoadError(
                f"{folder / WEIGHTS_FILE}: weights do not fit the config "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        info = {k: v for k, v in meta.items() if k not in {"format", "name", "config"}}
        return cls(model, meta.get("name") or folder.name, info=info, device=device)


class OpenClipEncoder:
    """Any open_clip model from a local folder (`open_clip_config.json` + weights), e.g. BiomedCLIP."""

    def __init__(self, folder: str | Path, *, batch_size: int = 32, device: str | torch.device = "cpu") -> None:
        import open_clip

        folder = Path(folder)
        if not (folder / "open_clip_config.json").is_file():
            raise EncoderLoadError(f"{folder}: no open_clip_config.json (not an open_clip checkpoint folder)")
        if not any(any(folder.glob(pattern)) for pattern in ("*.safetensors", "*.bin", "*.pth", "*.pt")):
            # open_clip would silently fall back to random weights; a user's checkpoint must have some.
            raise EncoderLoadError(f"{folder}: open_clip_config.json but no weights file (.safetensors/.bin/.pth)")
        spec = f"local-dir:{folder.resolve()}"
        model, _, preprocess = open_clip.create_model_and_transforms(spec)
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = model.eval().to(self.device)
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(spec)
        self.name = f"open_clip:{folder.name}"
        self.batch_size = batch_size
        with torch.inference_mode():
            self.dim = int(self.model.encode_text(self.tokenizer(["probe"]).to(self.device)).shape[-1])

    @cached_property
    def fingerprint(self) -> str:
        return weights_fingerprint(self.model)

    @torch.inference_mode()
    def embed_pixels(self, slices: list[np.ndarray]) -> np.ndarray:
        from kgreport.retrieval.encoders.transforms import to_pil_rgb

        out = []
        for start in range(0, len(slices), self.batch_size):
            batch = torch.stack([self.preprocess(to_pil_rgb(s)) for s in slices[start : start + self.batch_size]])
            out.append(self.model.encode_image(batch.to(self.device)))
        return _normalise(torch.cat(out)) if out else np.zeros((0, self.dim), dtype=np.float32)

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalise(self.model.encode_text(self.tokenizer(texts).to(self.device)))


def load_image_encoder(path: str | Path, *, device: str | torch.device = "cpu") -> CTEncoder | OpenClipEncoder:
    """Load a kgreport CT encoder folder or an open_clip checkpoint folder onto `device` (auto, cpu, cuda)."""
    folder = Path(str(path).removeprefix("local-dir:"))
    if not folder.exists():
        raise EncoderLoadError(f"{folder}: encoder path not found")
    if (folder / ENCODER_FILE).is_file():
        return CTEncoder.load(folder, device=device)
    if (folder / "open_clip_config.json").is_file():
        return OpenClipEncoder(folder, device=device)
    raise EncoderLoadError(
        f"{folder}: neither a kgreport encoder ({ENCODER_FILE}) nor an open_clip checkpoint (open_clip_config.json)"
    )
