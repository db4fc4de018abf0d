"""Which torch device a job runs on: one rule for encoder training, writer training and report writing."""

from __future__ import annotations

import torch

from kgreport.errors import SettingError


def resolve_device(device: str) -> torch.device:
    """`auto` is CUDA when this torch sees a GPU, else the CPU; `cpu` and `cuda` are taken as asked."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in {"cpu", "cuda"}:
        raise SettingError(f"device must be auto, cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise SettingError("device cuda asked for (KGREPORT_DEVICE or --device), but this torch sees no CUDA GPU")
    return torch.device(device)


def describe(device: torch.device) -> str:
    """ "cpu", or "cuda (NVIDIA H200)": for start-up logs and the service's readiness answer."""
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type
