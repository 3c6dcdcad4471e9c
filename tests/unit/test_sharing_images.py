"""Images shown in a call: DICOM parsed and rendered per window preset with no patient tag
left, photos re-encoded without EXIF, and refusals with their reasons."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from signaling.console.attachments import UploadRefused
from signaling.sharing import dicom
from signaling.sharing.images import prepare
from tests import dicom_files
from tests.clinic_images import DEVICE, GPS_MARK, jpeg_with_gps


def _unknown_vr(data: bytes) -> bytes:
    """The patient's name element with a VR that does not exist."""
    at = data.index(b"\x10\x00\x10\x00PN")
    return data[: at + 4] + b"ZZ" + data[at + 6 :]


def _grey(png: bytes) -> np.ndarray:
    picture = cv2.imdecode(np.frombuffer(png, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    assert picture is not None
    return picture


def test_a_ct_slice_is_rendered_per_window_with_the_files_own() -> None:
    data = dicom_files.ct_slice(rows=64, columns=96)
    rendered = dicom.render(data)
    assert (rendered.width, rendered.height) == (96, 64)
    assert list(rendered.renditions) == ["soft_tissue", "lung", "bone", "file"]
    hu = np.linspace(-1000, 1000, 96)  # what each column holds
    for name, (level, width) in {**dicom.CT_WINDOWS, "file": (50.0, 350.0)}.items():
        picture = _grey(rendered.renditions[name])
        assert picture.shape == (64, 96) and picture.dtype == np.uint8
        row = picture[10].astype(int)
        below = hu < level - width / 2 - 1
        above = hu > level + width / 2 + 1
        assert (row[below] == 0).all(), name
        assert (row[above] == 255).all(), name
        inside = ~below & ~above
        assert np.all(np.diff(row[inside]) >= 0), name  # brighter to the right
    # Lung shows air (-1000 .. -100) in greys where soft tissue shows it black.
    assert _grey(rendered.renditions["lung"])[10, 20] > 0
    assert _grey(rendered.renditions["soft_tissue"])[10, 20] == 0


def test_no_patient_tag_leaves_with_the_picture_or_its_tags() -> None:
    data = dicom_files.ct_slice()
    assert all(marker in data for marker in dicom_files.PATIENT_MARKERS)
    prepared = prepare(data)
    assert prepared.kind == "dicom" and prepared.media_type == "image/png"
    for png in prepared.renditions.values():
        for marker in dicom_files.PATIENT_MARKERS:
            assert marker not in png
        assert b"tEXt" not in png and b"iTXt" not in png and b"zTXt" not in png
    assert prepared.info is not None
    info = prepared.info.as_dict()
    assert info == {"modality": "CT", "bodyPart": "CHEST", "sliceThickness": 1.25, "frames": 1}
    assert not any(
        marker.decode() in str(value)
        for value in info.values()
        for marker in dicom_files.PATIENT_MARKERS
    )


def test_a_colour_dicom_has_one_rendition_in_its_colours() -> None:
    rendered = dicom.render(dicom_files.colour_capture(rows=40, columns=60))
    assert list(rendered.renditions) == ["original"]
    picture = cv2.imdecode(
        np.frombuffer(rendered.renditions["original"], np.uint8), cv2.IMREAD_COLOR
    )
    assert picture.shape == (40, 60, 3)
    assert tuple(picture[5, 5]) == (0, 0, 255)  # red, in OpenCV's BGR
    assert tuple(picture[5, 55]) == (255, 0, 0)  # blue


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (dicom_files.without_pixels(), "no image"),
        (dicom_files.jpeg_compressed(), "cannot be decoded"),
        (_unknown_vr(dicom_files.ct_slice()), "cannot parse"),
        (dicom_files.ct_slice()[:-2000], "cannot be decoded"),
    ],
    ids=["no-pixels", "jpeg2000", "unknown-vr", "truncated-pixels"],
)
def test_dicom_that_cannot_be_shown_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(UploadRefused) as refused:
        prepare(data)
    assert refused.value.code == "bad_dicom"
    assert reason in str(refused.value)
    for marker in dicom_files.PATIENT_MARKERS:
        assert marker.decode() not in str(refused.value)


def test_dicom_too_large_in_pixels_is_refused_before_decoding() -> None:
    data = dicom_files.ct_slice(rows=16, columns=16)
    # Rows claimed far beyond the pixel data: refused by the header, not by decoding.
    patched = data.replace(
        b"\x28\x00\x10\x00US\x02\x00\x10\x00", b"\x28\x00\x10\x00US\x02\x00\xff\x7f"
    )
    assert patched != data
    with pytest.raises(UploadRefused, match="too large"):
        prepare(patched)


def test_a_photo_is_re_encoded_without_exif() -> None:
    data = jpeg_with_gps(64, 32)
    assert GPS_MARK in data and DEVICE in data
    prepared = prepare(data)
    assert prepared.kind == "photo" and prepared.media_type == "image/jpeg"
    assert (prepared.width, prepared.height) == (64, 32)
    (only,) = prepared.renditions.values()
    assert GPS_MARK not in only and DEVICE not in only and b"Exif" not in only


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty"),
        (b"%PDF-1.4 a report", "bad_type"),
        (b"GIF89a" + b"\0" * 100, "bad_type"),
        (b"\xff\xd8\xff" + b"\0" * 100, "bad_image"),
        (b"\xff\xd8\xff" + b"\0" * (20 * 1024 * 1024), "too_large"),
    ],
    ids=["empty", "pdf", "gif", "broken-jpeg", "too-large"],
)
def test_uploads_that_are_not_images_are_refused(data: bytes, code: str) -> None:
    with pytest.raises(UploadRefused) as refused:
        prepare(data)
    assert refused.value.code == code
