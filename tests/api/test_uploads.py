"""Upload type sniffing: the content decides, not the client's file name."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from pydicom.data import get_testdata_file

from kgreport.api.service.uploads import safe_name, sniff_suffix


def _picture(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format=fmt)
    return buffer.getvalue()


def test_types_are_judged_by_content() -> None:
    nifti = nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.int16), np.eye(4)).to_bytes()
    dicom = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    assert sniff_suffix(_picture("PNG"), "photo.jpg") == ".png"
    assert sniff_suffix(_picture("JPEG"), "") == ".jpg"
    assert sniff_suffix(dicom, "no-suffix") == ".dcm"
    assert sniff_suffix(nifti, "volume") == ".nii"
    assert sniff_suffix(gzip.compress(nifti), "volume.nii.gz") == ".nii.gz"
    assert sniff_suffix(b"%PDF-1.7 ...", "scan.png") is None
    assert sniff_suffix(gzip.compress(b"text"), "notes.gz") is None


def test_safe_names_stay_in_their_folder() -> None:
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("my scan (1).dcm") == "my_scan_1_.dcm"
    assert safe_name("", "image") == "image" and safe_name("...", "image") == "image"
