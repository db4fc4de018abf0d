"""Real DICOM files (pydicom's test data) with one attribute made malformed: what a broken modality or a
hostile client uploads. Each decodes to an image or must be refused as unreadable, never crash a decoder."""

from __future__ import annotations

import io

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence


def modality_lut(descriptor: list[int] | None, data: list[int] | None) -> Sequence:
    """A Modality LUT Sequence (0028,3000) of one item: LUT Descriptor (0028,3002), LUT Data (0028,3006)."""
    item = Dataset()
    if descriptor is not None:
        item.LUTDescriptor = descriptor
    item.ModalityLUTType = "HU"
    if data is not None:
        item.add_new(0x00283006, "US", data)
    return Sequence([item])


def with_attribute(source: str, keyword: str, value: object) -> bytes:
    """pydicom's test file `source` with `keyword` set to `value`, as the bytes of a DICOM file."""
    ds = pydicom.dcmread(str(get_testdata_file(source)))
    setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def with_raw_text(source: str, keyword: str, text: str) -> bytes:
    """`source` with the text attribute `keyword` (a DS, IS, CS ...) holding `text` as written, even where
    pydicom would refuse to set it ("abc" as a Rescale Slope): a same-length placeholder is written, then
    its bytes are replaced."""
    padded = text.encode("latin-1") + (b" " if len(text) % 2 else b"")
    for digit in "123456789":
        placeholder = digit * len(padded)
        raw = with_attribute(source, keyword, placeholder)
        if raw.count(placeholder.encode()) == 1:
            return raw.replace(placeholder.encode(), padded)
    raise ValueError(f"{source}: no unique placeholder for {keyword}")


def malformed_dicoms() -> dict[str, bytes]:
    """{what is wrong: the file}, the DICOM battery of the hostile-inputs benchmark."""
    return {
        "Modality LUT of 65,536 entries holding 3": with_attribute(
            "CT_small.dcm", "ModalityLUTSequence", modality_lut([0, 0, 16], [1, 2, 3])
        ),
        "Modality LUT without a descriptor": with_attribute(
            "CT_small.dcm", "ModalityLUTSequence", modality_lut(None, [1, 2])
        ),
        "Modality LUT of 99-bit entries": with_attribute(
            "MR_small.dcm", "ModalityLUTSequence", modality_lut([2, 0, 99], [1, 2])
        ),
        "palette colour without a palette": with_attribute(
            "CT_small.dcm", "PhotometricInterpretation", "PALETTE COLOR"
        ),
        "samples per pixel 0": with_attribute("CT_small.dcm", "SamplesPerPixel", 0),
        "YBR on a monochrome image": with_attribute("CT_small.dcm", "PhotometricInterpretation", "YBR_FULL"),
        "zero rows": with_attribute("CT_small.dcm", "Rows", 0),
        "rescale slope 'abc'": with_raw_text("CT_small.dcm", "RescaleSlope", "abc"),
        "rescale intercept '1e999'": with_raw_text("CT_small.dcm", "RescaleIntercept", "1e999"),
        "bits stored 99": with_attribute("MR_small.dcm", "BitsStored", 99),
    }
