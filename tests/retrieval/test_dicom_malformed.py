"""DICOM files whose pixel-transform attributes are malformed: a decoded image or `ImageDecodeError`
naming the file and the attribute, never another exception (the service would answer 500).

Real pydicom test files, each with one attribute set to a hostile value and written back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.sequence import Sequence

from kgreport.retrieval.imaging import ImageDecodeError, load_image
from kgreport.testkit.malformed_dicom import modality_lut, with_attribute, with_raw_text


def _written(tmp_path: Path, source: str, keyword: str, value: object) -> Path:
    """The file with `value` set; a text pydicom refuses to set ("abc" as a DS) is written as raw bytes."""
    path = tmp_path / f"{source}-{keyword}.dcm"
    try:
        path.write_bytes(with_attribute(source, keyword, value))
    except (ValueError, TypeError, OverflowError):
        if not isinstance(value, str):
            raise
        path.write_bytes(with_raw_text(source, keyword, value))
    return path


def test_a_well_formed_modality_lut_is_applied(tmp_path: Path) -> None:
    """The control: a LUT covering every stored value maps each to its entry."""
    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    stored = ds.pixel_array
    low, high = int(stored.min()), int(stored.max())
    path = _written(tmp_path, "CT_small.dcm", "ModalityLUTSequence",
                    modality_lut([high - low + 1, low, 16], [2 * v for v in range(high - low + 1)]))  # fmt: skip
    decoded = load_image(path)
    assert np.array_equal(decoded.pixels, 2 * (stored.astype(np.float32) - low))


@pytest.mark.parametrize(
    "lut",
    [
        modality_lut([0, 0, 16], [1, 2, 3]),  # 0 entries means 65536: far more than the data holds
        modality_lut([4096, 0, 16], []),  # no data
        modality_lut([2, 0, 99], [1, 2]),  # 99 bits per entry
        modality_lut([1, 0], [5]),  # a descriptor of two values
        modality_lut(None, [1, 2]),  # no descriptor
    ],
    ids=["entries-0", "no-data", "99-bits", "short-descriptor", "no-descriptor"],
)
@pytest.mark.parametrize("source", ["CT_small.dcm", "MR_small.dcm"])
def test_a_malformed_modality_lut_is_an_unreadable_image(tmp_path: Path, source: str, lut: Sequence) -> None:
    path = _written(tmp_path, source, "ModalityLUTSequence", lut)
    with pytest.raises(ImageDecodeError) as caught:
        load_image(path)
    assert str(path) in str(caught.value) and "Modality LUT Sequence (0028,3000)" in str(caught.value)


@pytest.mark.parametrize(("keyword", "text"), [("RescaleSlope", "abc"), ("RescaleIntercept", "1e999")])
def test_a_rescale_that_is_no_finite_number_is_an_unreadable_image(tmp_path: Path, keyword: str, text: str) -> None:
    """Written as raw bytes (pydicom refuses to set them); 1e999 would make every pixel infinite."""
    path = tmp_path / "rescale.dcm"
    path.write_bytes(with_raw_text("CT_small.dcm", keyword, text))
    with pytest.raises(ImageDecodeError, match=r"Rescale Slope/Intercept \(0028,1053\)"):
        load_image(path)


HOSTILE: dict[str, list[object]] = {
    "RescaleSlope": ["abc", "", "1e999", "nan", "0"],
    "RescaleIntercept": ["x", "1e999"],
    "BitsStored": [0, 64, 99],
    "BitsAllocated": [0, 7, 64],
    "PixelRepresentation": [5],
    "SamplesPerPixel": [0, 3, 7],
    "PhotometricInterpretation": ["MONOCHROME1", "PALETTE COLOR", "RGB", "YBR_FULL", "nonsense"],
    "Rows": [0, 1, 65535],
    "NumberOfFrames": [0, 1000],
    "PixelSpacing": [["a", "b"], [0, 0], [1]],
    "ImageOrientationPatient": [[1, 0], [0] * 6],
    "ImagePositionPatient": [["x", "y", "z"], [1]],
    "RescaleType": ["US", "\x00"],
    "PlanarConfiguration": [1, 7],
}


@pytest.mark.parametrize("source", ["CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "rtdose.dcm"])
def test_hostile_header_values_decode_or_are_unreadable(tmp_path: Path, source: str) -> None:
    """Every attribute of HOSTILE, one value at a time (about 40 files per source)."""
    outcomes: dict[str, int] = {"decoded": 0, "unreadable": 0}
    for keyword, values in HOSTILE.items():
        for value in values:
            try:
                path = _written(tmp_path, source, keyword, value)
            except (ValueError, TypeError, OverflowError):  # pydicom will not even write this value
                continue
            try:
                load_image(path)
                outcomes["decoded"] += 1
            except ImageDecodeError as err:
                assert str(path) in str(err)
                outcomes["unreadable"] += 1
    assert outcomes["decoded"] and outcomes["unreadable"], outcomes
