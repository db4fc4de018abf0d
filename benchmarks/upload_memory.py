"""Peak memory an uploaded query image adds: the three bombs of hardening issue #1 and two normal files.

Each file goes through the function `/v1/search` uses for an uploaded image, `CaseSearcher.embed_image`
(decode, HU guess for NIfTI, slice choice and windowing, CT encoder), in a fresh subprocess. The child
loads the encoder and embeds a small warm-up picture first, then reads its peak RSS (ru_maxrss) before
and after the upload: the difference is what the upload added. Target: at most 1 GB each, whether the
file is refused (pixel budget) or read cheaply (a volume read in part).

Files, generated on the fly in a temporary folder (testkit/bombs.py):
- bomb.png: 13000 x 13000 RGB zeros, about 490 KB (issue: peak RSS 1.6 → 8.7 GB)
- bomb.jpg: a 16 x 16 JPEG whose header claims 13000 x 13000 (issue: +1.9 GB)
- bomb.nii.gz: 1024 x 1024 x 512 uint8 zeros, about 520 KB (issue: +4.7 GB)
- control.nii.gz: a 512 x 512 x 64 int16 CT-like volume; control.png: a 512 x 512 RGB photograph-like picture

Usage: python -m kgreport.benchmarks.upload_memory [--encoder data/models/ct-encoder] [--volume-slices 8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
from PIL import Image

from kgreport.benchmarks.results_io import RESULTS, write_result
from kgreport.testkit.bombs import bomb_jpeg, bomb_nifti, bomb_png_rgb

REPO = Path(__file__).resolve().parents[1]
TARGET_MB = 1000.0


def control_volume(path: Path, shape: tuple[int, int, int] = (512, 512, 64)) -> Path:
    """A CT-like int16 volume: air around a noisy soft-tissue cylinder, in HU."""
    rng = np.random.default_rng(0)
    x, y = np.mgrid[: shape[0], : shape[1]]
    body = (x - shape[0] / 2) ** 2 + (y - shape[1] / 2) ** 2 < (0.4 * shape[0]) ** 2
    data = np.full(shape, -1000, dtype=np.int16)
    data[body] = rng.normal(40, 30, (int(body.sum()), shape[2])).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([0.7, 0.7, 2.5, 1.0])), path)
    return path


def control_picture(path: Path, side: int = 512) -> Path:
    """A 512 x 512 RGB picture with photograph-like noise."""
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def make_files(folder: Path) -> dict[str, Path]:
    """The bombs and controls of this benchmark, written into `folder`."""
    return {
        "bomb.png": bomb_png_rgb(folder / "bomb.png"),
        "bomb.jpg": bomb_jpeg(folder / "bomb.jpg"),
        "bomb.nii.gz": bomb_nifti(folder / "bomb.nii.gz"),
        "control.nii.gz": control_volume(folder / "control.nii.gz"),
        "control.png": control_picture(folder / "control.png"),
    }


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child(path: Path, encoder_dir: Path, volume_slices: int, max_megapixels: float) -> dict[str, Any]:
    """In a fresh process: the peak RSS `embed_image(path)` adds to a searcher that is ready to answer."""
    from kgreport.retrieval.config import ImagingConfig, SearchConfig
    from kgreport.retrieval.encoders.image_encoder import load_image_encoder
    from kgreport.retrieval.encoders.text_encoder import TextEncoder
    from kgreport.retrieval.search import CaseSearcher, QueryError
    from kgreport.retrieval.stores.local.store import CaseStore

    encoder = load_image_encoder(encoder_dir)
    # embed_image touches neither the store nor the text encoder: no index is needed to measure it
    searcher = CaseSearcher(
        cast(CaseStore, None),
        encoder,
        cast(TextEncoder, None),
        SearchConfig(imaging=ImagingConfig(volume_slices=volume_slices, max_pixels=int(max_megapixels * 1e6))),
    )
    with tempfile.TemporaryDirectory() as tmp:
        searcher.embed_image(control_picture(Path(tmp) / "warmup.png", side=64))
    before = _peak_mb()
    started = time.perf_counter()
    row: dict[str, Any] = {}
    try:
        _, decoded = searcher.embed_image(path)
        row.update(outcome="embedded", decoded_shape=list(decoded.shape), n_slices=decoded.metadata.get("n_slices"))
    except QueryError as err:
        row.update(outcome="refused", reason=str(err).replace(str(path.parent) + "/", ""))
    row.update(
        seconds=round(time.perf_counter() - started, 2),
        peak_before_mb=round(before, 1),
        peak_after_mb=round(_peak_mb(), 1),
        added_mb=round(_peak_mb() - before, 1),
    )
    return row


def measure(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run `child` for one file in a fresh interpreter and return its row."""
    command = [sys.executable, "-m", "kgreport.benchmarks.upload_memory", "--child", str(path)]
    command += ["--encoder", str(args.encoder), "--volume-slices", str(args.volume_slices)]
    command += ["--max-megapixels", str(args.max_megapixels)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    return cast(dict[str, Any], json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", type=Path, default=REPO / "data" / "models" / "ct-encoder")
    parser.add_argument("--volume-slices", type=int, default=8, help="the service's volume_slices setting")
    parser.add_argument("--max-megapixels", type=float, default=40.0, help="KGREPORT_MAX_IMAGE_MEGAPIXELS")
    parser.add_argument("--out", type=Path, default=RESULTS / "upload_memory.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.encoder, args.volume_slices, args.max_megapixels)))
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in make_files(Path(tmp)).items():
            row = {"file": name, "bytes": path.stat().st_size, **measure(path, args)}
            rows.append(row)
            shape = "x".join(str(s) for s in row.get("decoded_shape", [])) or "-"
            print(
                f"{name:<15} {row['bytes'] / 1e3:>9,.1f} KB  {row['outcome']:<8}  "
                f"+{row['added_mb']:>7,.0f} MB peak RSS  {row['seconds']:>6.2f} s  decoded {shape}",
                flush=True,
            )
    worst = max(r["added_mb"] for r in rows)
    print(f"worst: +{worst:,.0f} MB (target ≤ {TARGET_MB:,.0f} MB): {'met' if worst <= TARGET_MB else 'MISSED'}")
    pages = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    write_result(
        args.out,
        {
            "benchmark": "upload_memory",
            "target_added_mb": TARGET_MB,
            "volume_slices": args.volume_slices,
            "max_megapixels": args.max_megapixels,
            "worst_added_mb": worst,
            "target_met": worst <= TARGET_MB,
            "rows": rows,
            "ram_gb": round(pages / 2**30, 1),
        },
    )


if __name__ == "__main__":
    main()
