"""Volumes too large to hold whole are read in part (hardening issue #1), and the part is the right one.

The issue's 522 KB .nii.gz of 1024 x 1024 x 512 zeros took 4.7 GB as a whole float32 array; now only
the slices to embed and a sample are decoded. Smaller volumes are read in part here by lowering the
budget, and must give exactly the slices a whole read gives.
"""

from __future__ import annotations

import shutil
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import nibabel as nib
import numpy as np
import pydicom
import pytest

import kgreport.retrieval.imaging.budget as budget
import kgreport.retrieval.imaging.dicom as dicom
import kgreport.retrieval.imaging.dicom_decode as dicom_decode
import kgreport.retrieval.imaging.nifti as nifti
from kgreport.retrieval.imaging import DecodedImage, ImageDecodeError, load_image, load_series, read_nifti, to_slices
from kgreport.retrieval.imaging.budget import slices_to_read
from kgreport.retrieval.imaging.slices import slice_indices
from kgreport.testkit.bombs import bomb_nifti

T = TypeVar("T")
CT_SERIES = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "77654033" / "CT2"


def _traced_peak(read: Callable[[], T]) -> tuple[T, int]:
    """`read()` and the peak bytes Python and NumPy allocated while it ran (tracemalloc sees both)."""
    tracemalloc.start()
    try:
        result = read()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _same_slices(part: DecodedImage, whole: DecodedImage, k: int) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(to_slices(part, k=k), to_slices(whole, k=k), strict=True))


def test_the_nifti_bomb_is_read_without_materialising_the_volume(tmp_path: Path) -> None:
    bomb = bomb_nifti(tmp_path / "bomb.nii.gz")
    assert bomb.stat().st_size < 600_000
    decoded, peak = _traced_peak(lambda: load_image(bomb))
    assert peak < 256 << 20, f"{peak >> 20} MiB allocated; the whole volume is 2048 MiB as float32"
    assert decoded.kind == "volume" and decoded.depth == 512 and decoded.sample is not None
    assert set(slice_indices(512, 8)) <= set(decoded.sample.index)
    assert decoded.shape == (len(decoded.sample.index), 1024, 1024)
    assert decoded.metadata["n_slices"] == 512 and "of 512" in decoded.metadata["slices_read"]
    slices = to_slices(decoded)
    assert len(slices) == 8 and all(s.shape == (1024, 1024) and not s.any() for s in slices)


def test_slices_to_read() -> None:
    mib = 1 << 20
    assert slices_to_read("v", 256, mib, 8) is None  # 256 MiB of float32: read whole
    picked = slices_to_read("v", 512, 4 * mib, 8)  # the bomb: 2 GiB
    assert picked is not None and set(slice_indices(512, 8)) <= set(picked) and len(picked) <= 8 + 32
    assert picked == sorted(picked) and sum(4 * mib for _ in picked) <= budget.MAX_VOLUME_BYTES
    assert slices_to_read("v", 600, mib, 64) is not None  # 64 embedded slices of 1 MiB: fine
    with pytest.raises(ImageDecodeError, match="v: 64 slices of 16.7772 M values take more than the 512 MiB"):
        slices_to_read("v", 600, 64 * mib, 64)


@pytest.mark.parametrize("stored", ["axial", "sagittal"])
def test_a_nifti_read_in_part_has_the_slices_of_a_whole_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stored: str
) -> None:
    shape, affine = (20, 24, 30), np.diag([0.8, 0.9, 2.5, 1.0])
    if stored == "sagittal":  # file axis 0 runs inferior → superior: axial slices cut across file planes
        shape, affine = (30, 24, 20), np.array([[0, 0, -0.8, 0], [0, 0.9, 0, 0], [2.5, 0, 0, 0], [0, 0, 0, 1.0]])
    data = np.random.default_rng(0).normal(40, 200, shape).astype(np.float32)
    path = tmp_path / f"{stored}.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    whole = read_nifti(path, assume_hu=True)
    slice_bytes = whole.pixels[0].nbytes
    monkeypatch.setattr(budget, "MAX_VOLUME_BYTES", 12 * slice_bytes)
    monkeypatch.setattr(nifti, "_BLOCK_BYTES", 3 * slice_bytes)  # several blocks for the sagittal file
    part = read_nifti(path, assume_hu=True, volume_slices=5)
    assert whole.sample is None and part.sample is not None and part.depth == whole.depth == 30
    assert part.sample.index == tuple(sorted(set(slice_indices(30, 5)) | set(slice_indices(30, 7))))
    assert np.array_equal(part.pixels, whole.pixels[list(part.sample.index)])
    assert part.spacing == whole.spacing and part.is_hu
    assert _same_slices(part, whole, 5)
    assert part.rows_of([0, 29]) == [0, len(part.sample.index) - 1]  # another k: the nearest slices read


def test_a_dicom_series_decodes_only_the_kept_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [Path(shutil.copy(f, tmp_path / f"{f.name}.dcm")) for f in sorted(CT_SERIES.iterdir())]
    whole = load_series(files)
    decoded: list[Path] = []

    def counting(ds: Any, path: Path, frames: list[int] | None = None) -> Any:
        decoded.append(path)
        return dicom_decode.decode_pixels(ds, path, frames)

    monkeypatch.setattr(dicom, "decode_pixels", counting)
    monkeypatch.setattr(budget, "MAX_VOLUME_BYTES", 3 * whole.pixels[0].nbytes)
    part = load_series(files, volume_slices=2)
    assert part.sample is not None and part.sample.index == (0, 3) and len(decoded) == 2
    assert np.array_equal(part.pixels, whole.pixels[[0, 3]]) and _same_slices(part, whole, 2)
    assert part.metadata["slice_positions"] == whole.metadata["slice_positions"] and part.depth == 4


def test_a_multiframe_dicom_decodes_only_the_kept_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    import data_store  # from pydicom-data

    path = Path(data_store.__file__).parent / "data" / "emri_small.dcm"  # 10 MR frames
    whole = load_image(path)
    frames: list[int] = []

    def counting(src: Any, *, index: int) -> np.ndarray:
        frames.append(index)
        return pydicom.pixels.pixel_array(src, index=index)

    monkeypatch.setattr(dicom_decode, "pixel_array", counting)
    monkeypatch.setattr(budget, "MAX_VOLUME_BYTES", 5 * whole.pixels[0].nbytes)
    part = load_image(path, volume_slices=3)
    assert part.sample is not None and len(frames) == len(part.sample.index) < 10
    assert np.array_equal(part.pixels, whole.pixels[list(part.sample.index)]) and _same_slices(part, whole, 3)


def test_absurd_sizes_are_refused_unread(tmp_path: Path) -> None:
    deep = bomb_nifti(tmp_path / "deep.nii.gz", (2048, 2048, 1024), voxels=False)
    with pytest.raises(ImageDecodeError, match="deep.nii.gz: 2048 x 2048 x 1024 voxels is more than the 1 G"):
        load_image(deep)
    wide = bomb_nifti(tmp_path / "wide.nii.gz", (8000, 8000, 4), voxels=False)
    with pytest.raises(ImageDecodeError, match="wide.nii.gz: 8000 x 8000 pixels is more than the 40 MP a slice"):
        load_image(wide)
    ds = pydicom.dcmread(sorted(CT_SERIES.iterdir())[0])
    ds.Rows = ds.Columns = 7000  # the pixel data is 16 x 16: never looked at
    ds.save_as(tmp_path / "huge.dcm")
    with pytest.raises(ImageDecodeError, match="huge.dcm: 7000 x 7000 pixels is more than the 40 MP a picture"):
        load_image(tmp_path / "huge.dcm")
