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

from kgreport.retrieval.imaging import (
    DEFAULT_CT_WINDOW,
    WINDOW_PRESETS,
    ImageDecodeError,
    WindowPreset,
    apply_window,
    load_case_image,
    load_image,
    load_series,
    normalize_percentile,
    read_dicom_file,
    read_nifti,
    scan_dicom_folder,
    to_slices,
)
from kgreport.retrieval.imaging.slices import slice_indices
from kgreport.retrieval.records import CaseImage
from kgreport.testkit.bombs import bomb_jpeg, bomb_png

PYDICOM_TESTS = Path(pydicom.__file__).parent / "data" / "test_files"
STUDY = PYDICOM_TESTS / "dicomdirtests" / "77654033"  # one CT series (CT2) and three CR films
CT_SERIES = STUDY / "CT2"
CT_SMALL = Path(get_testdata_file("CT_small.dcm"))


def _data_store(name: str) -> Path:
    import data_store  # from pydicom-data: compressed transfer syntaxes

    return Path(data_store.__file__).parent / "data" / name


def _copy_series(dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(f, dest / f"{f.name}.dcm")) for f in sorted(CT_SERIES.iterdir())]


# -- windows ---------------------------------------------------------------------------------------


def test_window_presets_and_scaling() -> None:
    assert {n: (p.center, p.width) for n, p in WINDOW_PRESETS.items()} == {
        "lung": (-600, 1500),
        "mediastinum": (50, 350),
        "bone": (400, 1800),
        "brain": (40, 80),
        "abdomen": (40, 400),
    }
    assert DEFAULT_CT_WINDOW == "abdomen"
    hu = np.array([-1000, -600, 40, 3000], dtype=np.float32)
    lung = apply_window(hu, "lung")
    assert lung.dtype == np.uint8 and lung[0] < lung[1] < lung[2] < lung[3] == 255
    assert list(apply_window(hu, WINDOW_PRESETS["brain"])) == [0, 0, 128, 255]
    assert np.array_equal(apply_window(hu, "Brain"), apply_window(hu, WindowPreset("mine", 40, 80)))
    with pytest.raises(ValueError, match="unknown window preset 'liverish'"):
        apply_window(hu, "liverish")
    with pytest.raises(ValueError, match="width must be positive"):
        WindowPreset("flat", 0, 0)
    ramp = normalize_percentile(np.arange(1000.0))
    assert ramp.dtype == np.uint8 and ramp.min() == 0 and ramp.max() == 255
    assert normalize_percentile(np.full((4, 4), 7.0)).max() == 0  # a flat image stays flat, no division by 0


# -- single DICOM files ----------------------------------------------------------------------------


def test_ct_small_gives_hounsfield_units() -> None:
    image = load_image(CT_SMALL)
    raw = pydicom.dcmread(CT_SMALL).pixel_array
    assert image.kind == "image" and image.is_hu and image.modality == "CT"
    assert image.shape == (128, 128) and image.pixels.dtype == np.float32
    assert np.array_equal(image.pixels, raw * 1.0 - 1024)  # RescaleSlope 1, RescaleIntercept -1024
    assert image.pixels.min() < -800 < 0 < image.pixels.max()  # air and soft tissue (its minimum is -896)
    assert image.spacing == pytest.approx((0.661468, 0.661468))
    assert image.metadata["patient_id"] == "1CT1" and image.metadata["plane"] == "axial"
    assert to_slices(image)[0].dtype == np.uint8


@pytest.mark.parametrize(
    ("compressed", "reference"),
    [
        ("693_J2KR.dcm", "693_UNCR.dcm"),  # CT, JPEG 2000 lossless
        ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),  # MR, JPEG 2000 lossless
        ("US1_J2KR.dcm", "US1_UNCR.dcm"),  # colour ultrasound, YBR_RCT → RGB
        ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),  # JPEG-LS, 10 frames
        ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
        ("emri_small_RLE.dcm", "emri_small.dcm"),
        ("MR2_J2KI.dcm", "MR2_UNCI.dcm"),  # lossy: UNCI is the decoded J2KI, so equal too
    ],
)
def test_compressed_dicom_decodes_to_the_uncompressed_pixels(compressed: str, reference: str) -> None:
    a, b = load_image(_data_store(compressed)), load_image(_data_store(reference))
    assert a.shape == b.shape and a.kind == b.kind and a.is_hu == b.is_hu
    assert np.array_equal(a.pixels, b.pixels)


def test_jpeg_lossless_and_jpeg2000_nm_images() -> None:
    unc = load_image(_data_store("JPEG2000_UNC.dcm"))
    assert np.array_equal(load_image(PYDICOM_TESTS / "JPEG2000.dcm").pixels, unc.pixels)
    # JPEG-LL.dcm is the same NM acquisition geometry but not a re-encoding of JPEG2000_UNC's pixels.
    jpeg_ll = load_image(_data_store("JPEG-LL.dcm"))
    assert jpeg_ll.shape == unc.shape == (1024, 256) and not jpeg_ll.is_hu


def test_undecodable_pixel_data_names_file_tag_and_syntax() -> None:
    path = PYDICOM_TESTS / "JPEG-lossy.dcm"  # 12-bit JPEG Extended: no installed decoder handles it
    with pytest.raises(ImageDecodeError) as caught:
        load_image(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot decode Pixel Data (7FE0,0010)")
    assert "JPEG Extended" in message and "\n" not in message


def test_corrupt_and_pixel_less_dicom_name_the_file_and_tag(tmp_path: Path) -> None:
    data = CT_SMALL.read_bytes()
    (tmp_path / "cut_in_pixels.dcm").write_bytes(data[:30000])
    with pytest.raises(ImageDecodeError, match=r"cut_in_pixels.dcm: cannot decode Pixel Data \(7FE0,0010\)"):
        load_image(tmp_path / "cut_in_pixels.dcm")
    (tmp_path / "cut_in_header.dcm").write_bytes(data[:3000])
    with pytest.raises(ImageDecodeError, match=r"cut_in_header.dcm: no Pixel Data \(7FE0,0010\)"):
        load_image(tmp_path / "cut_in_header.dcm")
    (tmp_path / "cut_in_preamble.dcm").write_bytes(data[:100])
    with pytest.raises(ImageDecodeError, match="cut_in_preamble.dcm: not a DICOM file"):
        load_image(tmp_path / "cut_in_preamble.dcm")
    ds = pydicom.dcmread(CT_SMALL)
    del ds.PixelData
    ds.save_as(tmp_path / "no_pixels.dcm")
    with pytest.raises(ImageDecodeError, match=r"no_pixels.dcm: no Pixel Data \(7FE0,0010\)"):
        load_image(tmp_path / "no_pixels.dcm")
    (tmp_path / "report.dcm").write_text("FINDINGS: not an image")
    with pytest.raises(ImageDecodeError, match="report.dcm: not a DICOM file"):
        load_image(tmp_path / "report.dcm")


def test_enhanced_multiframe_ct_uses_functional_groups() -> None:
    path = _data_store("eCT_Supplemental.dcm")  # 2 frames, rescale and geometry only in functional groups
    volume = read_dicom_file(path)
    raw = pydicom.dcmread(path).pixel_array.astype(np.float32)
    assert volume.kind == "volume" and volume.shape == (2, 512, 512)
    assert np.array_equal(volume.pixels, raw - 1024)  # shared Pixel Value Transformation Sequence
    assert not volume.is_hu  # Rescale Type "US": a perfusion map, not Hounsfield units
    assert volume.spacing == pytest.approx((10.0, 0.388672, 0.388672))
    assert volume.metadata["slice_order"] == "position"
    assert np.all(np.diff(volume.metadata["slice_positions"]) > 0)


def test_monochrome1_palette_and_rgb_dicom() -> None:
    film = load_image(_data_store("RG3_UNCR.dcm"))  # MONOCHROME1 radiograph: stored high = dark
    ds = pydicom.dcmread(_data_store("RG3_UNCR.dcm"))
    assert film.metadata["inverted"] == "MONOCHROME1"
    assert np.array_equal(film.pixels, (2 ** int(ds.BitsStored) - 1) - ds.pixel_array.astype(np.float32))
    palette = load_image(_data_store("OBXXXX1A.dcm"))  # PALETTE COLOR ultrasound
    assert palette.shape == (600, 800, 3) and palette.pixels.max() <= 255
    assert palette.metadata["display_ready"]
    rgb = to_slices(load_image(_data_store("US1_UNCR.dcm")))
    assert rgb[0].shape == (480, 640, 3) and rgb[0].dtype == np.uint8


# -- DICOM series ----------------------------------------------------------------------------------


def test_ct_series_is_ordered_along_the_slice_normal() -> None:
    files = sorted(CT_SERIES.iterdir())
    volume = load_series(list(reversed(files)))  # the order given does not matter
    assert volume.kind == "volume" and volume.is_hu and volume.modality == "CT"
    assert volume.shape == (4, 16, 16)
    z = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in files]
    assert np.all(np.diff(volume.metadata["slice_positions"]) > 0)
    assert volume.metadata["slice_positions"] == pytest.approx(sorted(z))
    expected = np.stack([load_image(files[i]).pixels for i in np.argsort(z)])
    assert np.array_equal(volume.pixels, expected)
    # The first slice lies 200 mm below the other three: spacing is the typical gap, flagged irregular.
    assert volume.spacing == pytest.approx((1.25, 0.488281, 0.488281))
    assert volume.metadata["irregular_spacing"] is True


def test_series_without_positions_falls_back_to_instance_number(tmp_path: Path) -> None:
    files = _copy_series(tmp_path)
    numbers = [7, 3, 9, 1]
    for f, n in zip(files, numbers, strict=True):
        ds = pydicom.dcmread(f)
        del ds.ImagePositionPatient
        ds.InstanceNumber = n
        ds.save_as(f)
    volume = load_series(files)
    assert volume.metadata["slice_order"] == "instance_number"
    expected = np.stack([load_image(files[i]).pixels for i in np.argsort(numbers)])
    assert np.array_equal(volume.pixels, expected)


def test_series_with_a_bad_slice_names_the_file(tmp_path: Path) -> None:
    files = _copy_series(tmp_path / "sizes")
    odd = pydicom.dcmread(files[1])
    odd.Rows, odd.PixelData = 8, odd.PixelData[: 8 * 16 * 2]
    odd.save_as(files[1])
    bad_size = rf"{files[1].name}: Rows/Columns \(0028,0010\)/\(0028,0011\) 8x16 differ from the series' 16"
    with pytest.raises(ImageDecodeError, match=bad_size):
        load_series(files)
    files = _copy_series(tmp_path / "pixels")
    empty = pydicom.dcmread(files[2])
    del empty.PixelData
    empty.save_as(files[2])
    with pytest.raises(ImageDecodeError, match=rf"{files[2].name}: no Pixel Data \(7FE0,0010\)"):
        load_series(files)


def test_scan_groups_series_and_keeps_unreadable_reasons(tmp_path: Path) -> None:
    shutil.copytree(STUDY, tmp_path / "study")
    (tmp_path / "study" / "notes.txt").write_text("not DICOM, ignored")
    (tmp_path / "study" / "broken.dcm").write_bytes(CT_SMALL.read_bytes()[:100])
    scan = scan_dicom_folder(tmp_path)
    assert sorted(s.modality or "" for s in scan.series) == ["CR", "CR", "CR", "CT"]
    ct = next(s for s in scan.series if s.modality == "CT")
    assert len(ct.files) == 4 and ct.body_part == "head" and ct.plane == "axial" and not ct.is_projection
    assert ct.size_problem() is None and ct.frames_problem() is None
    assert [(p.name, "not a DICOM file" in why) for p, why in scan.unreadable] == [("broken.dcm", True)]


def test_load_image_on_a_folder_picks_the_largest_series(tmp_path: Path) -> None:
    shutil.copytree(STUDY, tmp_path / "study")
    volume = load_image(tmp_path / "study")
    assert volume.kind == "volume" and volume.shape == (4, 16, 16) and volume.modality == "CT"
    assert "largest of 4 series" in volume.metadata["chosen_series"]
    cr_uid = pydicom.dcmread(STUDY / "CR1" / "6154").SeriesInstanceUID
    film = load_image(tmp_path / "study", series_uid=cr_uid)
    assert film.kind == "image" and film.modality == "CR"
    with pytest.raises(ImageDecodeError, match="no DICOM image series with SeriesInstanceUID"):
        load_image(tmp_path / "study", series_uid="1.2.3")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageDecodeError, match="empty: no DICOM image series found"):
        load_image(tmp_path / "empty")


# -- NIfTI -----------------------------------------------------------------------------------------


def test_nifti_volume_round_trip_in_display_orientation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(40, 200, (20, 24, 12)).astype(np.float32)  # (X, Y, Z) in RAS
    data[19, 23, 5] = 5000  # the patient's right, anterior corner of slice 5
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.9, 2.5, 1.0])), path)
    volume = read_nifti(path)
    assert volume.kind == "volume" and volume.shape == (12, 24, 20) and not volume.is_hu
    assert volume.spacing == pytest.approx((2.5, 0.9, 0.8))
    assert volume.metadata["orientation"] == "RAS" and volume.metadata["original_orientation"] == "RAS"
    assert volume.pixels[5, 0, 0] == 5000  # radiological display: anterior on top, patient right on the left
    assert np.allclose(volume.pixels[3], data[:, :, 3].T[::-1, ::-1])
    # The same anatomy stored LPS (both in-plane axes flipped, affine flipped to match) reads identically.
    lps = tmp_path / "lps.nii"
    affine = np.diag([-0.8, -0.9, 2.5, 1.0])
    affine[:3, 3] = [0.8 * 19, 0.9 * 23, 0]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data[::-1, ::-1, :]), affine), lps)
    flipped = read_nifti(lps)
    assert flipped.metadata["original_orientation"] == "LPS"
    assert np.array_equal(flipped.pixels, volume.pixels)
    assert read_nifti(path, assume_hu=True).is_hu
    slices = to_slices(volume, k=5)
    assert len(slices) == 5 and all(s.dtype == np.uint8 and s.shape == (24, 20) for s in slices)


def test_nifti_shapes(tmp_path: Path) -> None:
    four = tmp_path / "fmri.nii"
    nib.save(nib.Nifti1Image(np.arange(8 * 8 * 4 * 2, dtype=np.float32).reshape(8, 8, 4, 2), np.eye(4)), four)
    first = load_image(four)
    assert first.shape == (4, 8, 8) and "2 volumes: using the first" in first.metadata["note"]
    assert first.pixels.max() == (8 * 8 * 4 - 1) * 2  # values of volume 0 only (even numbers)
    five = tmp_path / "odd.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2, 2), np.float32), np.eye(4)), five)
    with pytest.raises(ImageDecodeError, match=r"odd.nii: unsupported NIfTI shape \(4, 4, 4, 2, 2\)"):
        load_image(five)
    trailing = tmp_path / "trailing.nii.gz"  # (X, Y, Z, 1, 1) is a plain volume
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 1, 1), np.float32), np.eye(4)), trailing)
    assert load_image(trailing).shape == (3, 4, 4)
    flat = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(np.ones((6, 5), np.float32), np.eye(4)), flat)
    assert load_image(flat).kind == "image" and load_image(flat).shape == (5, 6)
    labels = nib.Nifti1Image(np.zeros((4, 4, 3), np.float32), np.eye(4))
    labels.header.set_intent("label")
    nib.save(labels, tmp_path / "labels.nii")
    assert not read_nifti(tmp_path / "labels.nii", assume_hu=True).is_hu
    short = tmp_path / "short.nii"
    short.write_bytes((tmp_path / "labels.nii").read_bytes()[:-40])
    with pytest.raises(ImageDecodeError, match="short.nii: truncated NIfTI file"):
        load_image(short)
    (tmp_path / "text.nii").write_text("not nifti")
    with pytest.raises(ImageDecodeError, match="text.nii: unreadable NIfTI file"):
        load_image(tmp_path / "text.nii")


# -- pictures --------------------------------------------------------------------------------------


def test_pictures_and_non_pictures(tmp_path: Path) -> None:
    gray = (np.arange(64 * 48) % 256).astype(np.uint8).reshape(48, 64)
    Image.fromarray(gray).save(tmp_path / "a.png")
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "b.jpg")
    Image.fromarray(np.dstack([gray, gray, gray, gray])).save(tmp_path / "c.png")  # RGBA
    colour = np.dstack([gray, 255 - gray, gray // 2])
    Image.fromarray(colour).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "d.png")  # palette
    Image.fromarray(gray.astype(np.uint16) * 200).save(tmp_path / "e.png")  # 16-bit grayscale
    png, jpg = load_image(tmp_path / "a.png"), load_image(tmp_path / "b.jpg")
    assert png.shape == (48, 64) and jpg.shape == (48, 64, 3) and png.kind == "image"
    assert np.array_equal(to_slices(png)[0], gray)  # 8-bit pictures pass through unchanged
    assert to_slices(jpg)[0].shape == (48, 64, 3)
    assert load_image(tmp_path / "c.png").shape == (48, 64, 3)
    assert load_image(tmp_path / "d.png").shape == (48, 64, 3)
    deep = load_image(tmp_path / "e.png")
    assert deep.shape == (48, 64) and deep.pixels.max() == 255 * 200 and not deep.metadata["display_ready"]
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(ImageDecodeError, match="notes.png: not a readable image"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")


# -- slicing and case images -----------------------------------------------------------------------


def test_slice_indices_cover_the_central_part() -> None:
    assert slice_indices(100, 5) == [10, 30, 50, 69, 89]
    assert slice_indices(3, 8) == [0, 1, 2]
    assert slice_indices(0, 8) == []
    for depth in range(1, 60):
        for k in range(1, 13):
            picked = slice_indices(depth, k)
            assert len(picked) == min(k, depth) and picked == sorted(set(picked))
            assert picked[0] >= 0 and picked[-1] < depth
    with pytest.raises(ValueError, match="k must be at least 1"):
        slice_indices(10, 0)


def test_to_slices_windows_hu_volumes() -> None:
    volume = load_image(CT_SERIES)
    default = to_slices(volume, k=3)
    assert len(default) == 3 and all(s.dtype == np.uint8 and s.shape == (16, 16) for s in default)
    assert np.array_equal(default[0], apply_window(volume.pixels[slice_indices(4, 3)[0]], DEFAULT_CT_WINDOW))
    lung = to_slices(volume, k=3, window="lung")
    assert not np.array_equal(lung[0], default[0])
    assert len(to_slices(volume, k=8)) == 4  # fewer slices than k: all of them


def test_load_case_image(tmp_path: Path) -> None:
    files = _copy_series(tmp_path / "series")
    listed = {"dicom_files": [str(f) for f in files[:3]]}
    image = CaseImage(image_id="s", path=tmp_path / "series", metadata=listed)
    assert load_case_image(image).shape == (3, 16, 16)  # only the listed files
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    assert load_case_image(CaseImage(image_id="v", path=tmp_path / "v.nii.gz", modality="CT")).is_hu
    assert not load_case_image(CaseImage(image_id="v", path=tmp_path / "v.nii.gz", modality="MR")).is_hu


def test_a_picture_over_the_pixel_budget_is_refused_before_decoding(tmp_path: Path) -> None:
    for bomb in (bomb_png(tmp_path / "big.png"), bomb_jpeg(tmp_path / "claims.jpg")):
        assert bomb.stat().st_size < 500_000
        with pytest.raises(ImageDecodeError, match=r"13000 x 13000 pixels is more than the 40 MP"):
            load_image(bomb)
        with pytest.raises(ImageDecodeError, match="more than the 100 MP"):
            load_image(bomb, max_pixels=100_000_000)  # 169 MP is still too many
    small = bomb_png(tmp_path / "small.png", side=2_000)
    assert load_image(small, max_pixels=4_000_000).pixels.shape == (2_000, 2_000)
    with pytest.raises(ImageDecodeError, match="2000 x 2000"):
        load_case_image(CaseImage(image_id="x", path=small), max_pixels=3_999_999)
