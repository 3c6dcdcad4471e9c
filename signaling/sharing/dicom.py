"""DICOM images for the call's viewer: parsed with pydicom, rendered to PNG per window preset.

What leaves this module is pixels and a few technical tags, never the file: the patient's
name, id, birth date, the institution, the accession number and every other tag stay
behind, because only the rendered picture (a PNG encoded from the pixel values alone, so
it has no metadata) and ``DicomInfo`` (modality, body part, slice thickness, frames) are
kept or sent. Known limit: text burned into the pixels (some ultrasound and secondary
captures) is part of the picture and is shown as it is.

Windows (level/width, in the modality's units after the rescale: Hounsfield units for CT):
``soft_tissue`` 40/400, ``lung`` -600/1500, ``bone`` 400/1800 for CT; ``file``, the first
window the file itself names; ``auto``, the 0.5-99.5 percentiles of the picture, for
images with neither. Colour images have one rendition, ``original``. A multi-frame file is
shown by its middle frame.

Everything here is CPU work on up to 50 MB: callers run it in a thread.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

MAX_DICOM_BYTES = 50 * 1024 * 1024
MAX_SIDE = 8192
MAX_FRAMES = 2000
# Decoded pixel data of the whole file (a compressed file can expand far beyond its size).
MAX_DECODED_BYTES = 512 * 1024 * 1024
_PREAMBLE = 128
_TEXT_TAG_CHARS = 64

# (level, width) in Hounsfield units.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}


class DicomRefused(ValueError):
    """A file that cannot be shown; the message says why and names nothing in the file."""


def is_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then ``DICM``."""
    return data[_PREAMBLE : _PREAMBLE + 4] == b"DICM"


@dataclass(frozen=True)
class DicomInfo:
    """The only tags that leave the server: technical, nothing that names the patient."""

    modality: str | None = None
    body_part: str | None = None
    slice_thickness: float | None = None
    frames: int = 1

    def as_dict(self) -> dict[str, object]:
        return {
            "modality": self.modality,
            "bodyPart": self.body_part,
            "sliceThickness": self.slice_thickness,
            "frames": self.frames,
        }


@dataclass(frozen=True)
class RenderedDicom:
    width: int
    height: int
    info: DicomInfo
    # preset -> PNG, in the order a viewer offers them (the first is the default).
    renditions: dict[str, bytes] = field(repr=False)


def render(data: bytes) -> RenderedDicom:
    """Parse ``data`` and render each preset, or raise DicomRefused with the reason."""
    if len(data) > MAX_DICOM_BYTES:
        raise DicomRefused("the DICOM file is larger than 50 MB")
    if not is_dicom(data):
        raise DicomRefused("not a DICOM Part 10 file (no DICM marker after the preamble)")
    ds = _read(data)
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise DicomRefused("the DICOM file has no image (no pixel data)")
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    frames = max(1, _int(ds, "NumberOfFrames") or 1)
    samples = max(1, _int(ds, "SamplesPerPixel") or 1)
    bits = _int(ds, "BitsAllocated") or 8
    if not (0 < rows <= MAX_SIDE and 0 < columns <= MAX_SIDE):
        raise DicomRefused("the DICOM image's size is missing or too large")
    if frames > MAX_FRAMES or rows * columns * frames * samples * math.ceil(bits / 8) > (
        MAX_DECODED_BYTES
    ):
        raise DicomRefused("the DICOM image has too many frames or pixels")
    _check_decodable(ds)
    pixels = _pixels(ds, frames // 2 if frames > 1 else None)
    info = DicomInfo(
        modality=_text(ds, "Modality"),
        body_part=_text(ds, "BodyPartExamined"),
        slice_thickness=_float(ds, "SliceThickness"),
        frames=frames,
    )
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if samples > 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        picture = _colour(pixels)
        return RenderedDicom(picture.shape[1], picture.shape[0], info, {"original": _png(picture)})
    values = _modality_values(ds, pixels)
    invert = photometric == "MONOCHROME1"
    windows = _windows(ds, values, info.modality)
    renditions = {name: _png(_window(values, lw, invert)) for name, lw in windows.items()}
    return RenderedDicom(values.shape[1], values.shape[0], info, renditions)


# ------------------------------------------------------------------ reading


def _read(data: bytes) -> Any:
    import pydicom
    from pydicom import config
    from pydicom.errors import InvalidDicomError

    # Strict: an element pydicom would guess its way past (an unknown VR, a bad length) is
    # a file it cannot parse. Set for the process, not per call in a context manager: that
    # one flips a global back and forth under the two threads that render at once, and
    # this is the process's only reader of DICOM.
    config.settings.reading_validation_mode = config.RAISE
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        # Elements are converted when first touched: touch them all now, under strict mode.
        for _ in ds.iterall():
            pass
        return ds
    except InvalidDicomError:
        raise DicomRefused("pydicom cannot parse the file: not valid DICOM") from None
    except Exception as exc:
        # Parser errors can quote bytes of the file; the reason names only the kind.
        raise DicomRefused(
            f"pydicom cannot parse the file ({type(exc).__name__}): damaged or incomplete"
        ) from None


def _check_decodable(ds: Any) -> None:
    from pydicom.pixels import get_decoder

    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None)
    if syntax is None:
        raise DicomRefused("the DICOM file does not say how its pixels are encoded")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DicomRefused(f"pixels encoded as {syntax} cannot be decoded") from None
    if not decoder.is_available:
        name = getattr(syntax, "name", str(syntax))
        raise DicomRefused(f"pixels compressed as {name} cannot be decoded on this server")


def _pixels(ds: Any, index: int | None) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        return np.asarray(pixel_array(ds, index=index))
    except Exception as exc:
        raise DicomRefused(
            f"the DICOM file's pixel data cannot be decoded ({type(exc).__name__})"
        ) from None


def _int(ds: Any, keyword: str) -> int:
    try:
        return int(ds.get(keyword) or 0)
    except (TypeError, ValueError):
        return 0


def _float(ds: Any, keyword: str) -> float | None:
    value = ds.get(keyword)
    try:
        number = float(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and math.isfinite(number) else None


def _text(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    text = "".join(c for c in str(value) if c.isprintable()).strip()[:_TEXT_TAG_CHARS]
    return text or None


def _first(value: Any) -> float | None:
    """A window tag's first value (it may be multi-valued)."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        value = value[0] if len(value) else None
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# ------------------------------------------------------------------ rendering


def _modality_values(ds: Any, pixels: np.ndarray) -> np.ndarray:
    """Stored values to the modality's units (Rescale Slope/Intercept; HU for CT)."""
    values = pixels.astype(np.float32)
    slope = _float(ds, "RescaleSlope")
    intercept = _float(ds, "RescaleIntercept")
    if slope is not None and slope != 0:
        values *= slope
    if intercept is not None:
        values += intercept
    if values.ndim != 2:
        raise DicomRefused("the DICOM image is not a single grey picture")
    return values


def _windows(ds: Any, values: np.ndarray, modality: str | None) -> dict[str, tuple[float, float]]:
    windows: dict[str, tuple[float, float]] = {}
    if (modality or "").upper() == "CT":
        windows.update(CT_WINDOWS)
    level, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if level is not None and width is not None and width > 0:
        windows["file"] = (level, width)
    if not windows:
        low, high = np.percentile(values, [0.5, 99.5])
        width = float(max(high - low, 1.0))
        windows["auto"] = (float(low) + width / 2, width)
    return windows


def _window(values: np.ndarray, level_width: tuple[float, float], invert: bool) -> np.ndarray:
    """DICOM's linear window (PS3.3 C.11.2.1.2) to 8 bits."""
    level, width = level_width
    low = level - 0.5 - (width - 1) / 2
    scaled = (values - low) / max(width - 1, 1.0)
    out = np.clip(scaled * 255.0, 0, 255).astype(np.uint8)
    return 255 - out if invert else out


def _colour(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        picture = pixels
    elif pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        picture = cv2.cvtColor(pixels[..., :3].astype(np.uint8), cv2.COLOR_RGB2BGR)
    else:
        raise DicomRefused("the DICOM image's colour layout is not supported")
    if picture.dtype != np.uint8:
        top = float(picture.max()) or 1.0
        picture = np.clip(picture.astype(np.float32) * (255.0 / top), 0, 255).astype(np.uint8)
    return picture


def _png(picture: np.ndarray) -> bytes:
    ok, out = cv2.imencode(".png", np.ascontiguousarray(picture))
    if not ok:
        raise DicomRefused("the DICOM image could not be rendered")
    return out.tobytes()
