"""Decoding of images and volumes: PNG/JPEG, DICOM files and series, NIfTI; CT windowing; slicing."""

from kgreport.retrieval.imaging.decoded import DecodedImage, VolumeSample
from kgreport.retrieval.imaging.dicom import (
    DicomScan,
    DicomSeries,
    SliceHeader,
    find_series,
    load_series,
    read_dicom_file,
    scan_dicom_folder,
)
from kgreport.retrieval.imaging.errors import ImageDecodeError
from kgreport.retrieval.imaging.loader import load_case_image, load_image
from kgreport.retrieval.imaging.nifti import read_nifti
from kgreport.retrieval.imaging.slices import DEFAULT_CT_WINDOW, DEFAULT_SLICES, to_slices
from kgreport.retrieval.imaging.windows import WINDOW_PRESETS, WindowPreset, apply_window, normalize_percentile

__all__ = [
    "DEFAULT_CT_WINDOW",
    "DEFAULT_SLICES",
    "WINDOW_PRESETS",
    "DecodedImage",
    "DicomScan",
    "DicomSeries",
    "ImageDecodeError",
    "SliceHeader",
    "VolumeSample",
    "WindowPreset",
    "apply_window",
    "find_series",
    "load_case_image",
    "load_image",
    "load_series",
    "normalize_percentile",
    "read_dicom_file",
    "read_nifti",
    "scan_dicom_folder",
    "to_slices",
]
