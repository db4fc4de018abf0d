"""A calibrated confidence that the image-only draft is usable, and the threshold under which to abstain.

Logistic regression over the draft's features (`generator.refine.FEATURES`: similarity of the nearest case,
agreement among the candidates, share of the draft's findings that several neighbours state, how far the
nearest case stands out), fitted on leakage-guarded queries of the training split against the event
"the draft's RadLex findings overlap the reference's" (`USABLE_F1`). Its output is a probability, so the
threshold reads as one; the benchmark draws the coverage against quality curve on dev, where the threshold
is chosen. Stored as `confidence.json` in the refiner's folder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kgreport.generator.refine import FEATURES
from kgreport.json_types import UncheckedJson

CONFIDENCE_JSON = "confidence.json"
USABLE_F1 = 0.2  # the event calibrated: the draft's present findings reach this F1 against the reference's


@dataclass(frozen=True)
class Calibration:
    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    event: str
    fitted_on: int  # queries

    def probability(self, features: Mapping[str, float]) -> float:
        x = (np.array([features[f] for f in self.features]) - np.array(self.mean)) / np.array(self.scale)
        return float(1 / (1 + np.exp(-(x @ np.array(self.weights) + self.bias))))

    def save(self, folder: Path) -> None:
        (folder / CONFIDENCE_JSON).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, folder: Path) -> Calibration | None:
        path = folder / CONFIDENCE_JSON
        if not path.is_file():
            return None
        data: UncheckedJson = json.loads(path.read_text())
        for key in ("features", "mean", "scale", "weights"):
            data[key] = tuple(data[key])
        return cls(**data)


def fit_calibration(
    rows: Sequence[Mapping[str, float]], labels: Sequence[bool], *, l2: float = 1.0, steps: int = 50
) -> Calibration:
    """Logistic regression by Newton's method on standardised features (L2 on the weights, not the bias)."""
    if len(rows) != len(labels) or not rows:
        raise ValueError(f"need as many labels as rows, and some rows ({len(rows)} rows, {len(labels)} labels)")
    x = np.array([[r[f] for f in FEATURES] for r in rows], dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    penalty = np.diag([l2] * (z.shape[1] - 1) + [0.0])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(z @ w)))
        gradient = z.T @ (p - y) + penalty @ w
        hessian = z.T @ (z * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return Calibration(
        features=FEATURES,
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        weights=tuple(float(v) for v in w[:-1]),
        bias=float(w[-1]),
        event=f"the draft's present RadLex findings reach F1 >= {USABLE_F1} against the reference's",
        fitted_on=len(rows),
    )
