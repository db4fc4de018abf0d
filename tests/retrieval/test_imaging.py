"""Decoding on real files: pydicom's test data (plain and compressed), NIfTI and pictures written here."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from retrieval.imaging import (
    ImageDecodeError,
    apply_window,
    find_series,
    load_image,
    load_series,
    normalize_percentile,
    read_nifti,
    to_slices,
)
from retrieval.imaging.slices import slice_indices

PYDICOM_TESTS = Path(pydicom.__file__).parent / "data" / "test_files"
CT_SERIES = PYDICOM_TESTS / "dicomdirtests" / "77654033" / "CT2"


def _data_store(name: str) -> Path:
    import data_store  # from pydicom-data: compressed transfer syntaxes

    return Path(data_store.__file__).parent / "data" / name


def test_windows_map_hu_to_bytes() -> None:
    hu = np.array([-1000, -600, 40, 3000], dtype=np.float32)
    lung = apply_window(hu, "lung")
    assert lung[0] < lung[1] < lung[2] < lung[3] == 255
    brain = apply_window(hu, "brain")
    assert brain[0] == 0 and brain[2] == 128 and brain[3] == 255
    with pytest.raises(ValueError, match="unknown window preset"):
        apply_window(hu, "liverish")
    assert normalize_percentile(np.arange(100.0)).max() == 255


def test_ct_small_gives_hounsfield_units() -> None:
    image = load_image(get_testdata_file("CT_small.dcm"))
    assert image.kind == "image" and image.is_hu and image.modality == "CT"
    assert image.shape == (128, 128)
    assert image.pixels.min() < -800 < 0 < image.pixels.max()  # air and soft tissue after rescale
    assert image.metadata["patient_id"] == "1CT1"
    assert to_slices(image)[0].dtype == np.uint8


@pytest.mark.parametrize(
    ("compressed", "reference"),
    [
        ("693_J2KR.dcm", "693_UNCR.dcm"),
        ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),
        ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
        ("emri_small_RLE.dcm", "emri_small.dcm"),
    ],
)
def test_lossless_compressed_dicom_decodes_to_the_same_pixels(compressed: str, reference: str) -> None:
    a, b = load_image(_data_store(compressed)), load_image(_data_store(reference))
    assert a.shape == b.shape
    assert np.array_equal(a.pixels, b.pixels)


def test_corrupt_and_pixel_less_dicom_name_the_file_and_tag(tmp_path: Path) -> None:
    source = Path(get_testdata_file("CT_small.dcm"))
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(source.read_bytes()[:3000])
    with pytest.raises(ImageDecodeError, match="truncated.dcm"):
        load_image(truncated)
    ds = pydicom.dcmread(source)
    del ds.PixelData
    no_pixels = tmp_path / "no_pixels.dcm"
    ds.save_as(no_pixels)
    with pytest.raises(ImageDecodeError, match=r"no_pixels.dcm: no Pixel Data \(7FE0,0010\)"):
        load_image(no_pixels)
    fake = tmp_path / "report.dcm"
    fake.write_text("FINDINGS: not an image")
    with pytest.raises(ImageDecodeError, match="report.dcm"):
        load_image(fake)


def test_ct_series_is_ordered_along_the_slice_normal() -> None:
    volume = load_image(CT_SERIES)
    assert volume.kind == "volume" and volume.is_hu
    assert volume.shape[1:] == (16, 16) and volume.shape[0] >= 4
    series, problems = find_series(CT_SERIES)
    assert len(series) == 1 and not problems
    z = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in series[0].files]
    expected = np.stack([load_image(f).pixels for f in np.array(series[0].files)[np.argsort(z)]])
    assert np.array_equal(volume.pixels, expected)
    assert volume.spacing is not None and volume.spacing[0] > 0
    slices = to_slices(volume, k=3)
    assert len(slices) == 3 and all(s.dtype == np.uint8 and s.shape == (16, 16) for s in slices)


def test_series_with_a_differently_sized_slice_names_the_file(tmp_path: Path) -> None:
    files = sorted(CT_SERIES.iterdir())
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    odd = pydicom.dcmread(tmp_path / files[1].name)
    odd.Rows, odd.PixelData = 8, odd.PixelData[: 8 * 16 * 2]
    odd.save_as(tmp_path / files[1].name)
    with pytest.raises(ImageDecodeError, match=files[1].name + r".*Rows/Columns"):
        load_series(sorted(tmp_path.iterdir()))


def test_nifti_volume_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(40, 200, (20, 24, 12)).astype(np.float32)
    data[0, 0, 0] = -1024
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    volume = read_nifti(path)
    assert volume.kind == "volume" and volume.shape == (12, 24, 20)
    assert volume.spacing == pytest.approx((2.5, 0.9, 0.8))
    assert volume.metadata["orientation"] == "RAS"
    assert np.allclose(volume.pixels[3], data[:, :, 3].T[::-1, :])
    assert len(to_slices(volume, k=5)) == 5


def test_nifti_4d_takes_first_volume_and_5d_is_refused(tmp_path: Path) -> None:
    four = tmp_path / "fmri.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 2), np.float32), np.eye(4)), four)
    image = load_image(four)
    assert image.shape == (4, 8, 8) and "first" in image.metadata["note"]
    five = tmp_path / "odd.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2, 2), np.float32), np.eye(4)), five)
    with pytest.raises(ImageDecodeError, match=r"odd.nii: unsupported NIfTI shape \(4, 4, 4, 2, 2\)"):
        load_image(five)


def test_pictures_and_non_pictures(tmp_path: Path) -> None:
    gray = (np.arange(64 * 48) % 256).astype(np.uint8).reshape(48, 64)
    Image.fromarray(gray).save(tmp_path / "a.png")
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "b.jpg")
    png, jpg = load_image(tmp_path / "a.png"), load_image(tmp_path / "b.jpg")
    assert png.shape == (48, 64) and jpg.shape == (48, 64, 3)
    assert np.array_equal(to_slices(png)[0], gray)
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(ImageDecodeError, match="notes.png"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def test_slice_indices_cover_the_central_part() -> None:
    assert slice_indices(100, 5) == [10, 30, 50, 69, 89]
    assert slice_indices(3, 8) == [0, 1, 2]
    assert slice_indices(0, 8) == []
