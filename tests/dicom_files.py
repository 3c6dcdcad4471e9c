"""DICOM files made with pydicom for the sharing tests: a CT slice whose patient tags carry
markers a test can look for, a colour secondary capture, and files that must be refused."""

from __future__ import annotations

import io

import numpy as np

PATIENT_NAME = "Wang^Xiaohong"
PATIENT_ID = "TC-PID-88412"
BIRTH_DATE = "19470312"
INSTITUTION = "TC-Hetian-Township-Hospital"
# What must never reach a client: each appears in the file as written.
PATIENT_MARKERS = (b"Wang^Xiaohong", b"TC-PID-88412", b"19470312", b"TC-Hetian-Township")


def _dataset(rows: int, columns: int, *, modality: str = "CT") -> object:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.InstitutionName = INSTITUTION
    ds.Modality = modality
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "1.25"
    ds.Rows, ds.Columns = rows, columns
    return ds


def ct_slice(rows: int = 64, columns: int = 96) -> bytes:
    """A CT slice: Hounsfield units from -1000 (left) to +1000 (right), stored with a rescale
    intercept of -1024, and the file's own window 50/350."""
    ds = _dataset(rows, columns)
    hu = np.tile(np.linspace(-1000, 1000, columns), (rows, 1))
    stored = (hu + 1024).astype(np.uint16)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.WindowCenter = "50"
    ds.WindowWidth = "350"
    ds.PixelData = stored.tobytes()
    return _write(ds)


def ct_phantom(size: int = 256) -> bytes:
    """A chest-like CT slice to look at: air around a body of soft tissue, two lungs, a
    spine and a sternum of bone, so each window shows something different."""
    ds = _dataset(size, size)
    yy, xx = np.mgrid[0:size, 0:size] / size

    def ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0

    hu = np.full((size, size), -1000.0)
    hu[ellipse(0.5, 0.5, 0.42, 0.32)] = 40.0
    for cx in (0.33, 0.67):
        hu[ellipse(cx, 0.48, 0.13, 0.2)] = -820.0
    hu[ellipse(0.5, 0.74, 0.06, 0.05)] = 900.0
    hu[ellipse(0.5, 0.24, 0.03, 0.025)] = 700.0
    hu += np.random.default_rng(3).normal(0, 12, hu.shape)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.PixelData = np.clip(hu + 1024, 0, 4095).astype(np.uint16).tobytes()
    return _write(ds)


def colour_capture(rows: int = 40, columns: int = 60) -> bytes:
    ds = _dataset(rows, columns, modality="OT")
    picture = np.zeros((rows, columns, 3), dtype=np.uint8)
    picture[:, : columns // 2] = (255, 0, 0)  # red left half
    picture[:, columns // 2 :] = (0, 0, 255)  # blue right half
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = picture.tobytes()
    return _write(ds)


def without_pixels() -> bytes:
    ds = _dataset(64, 64)
    del ds.Rows
    del ds.Columns
    return _write(ds)


def jpeg_compressed() -> bytes:
    """A CT slice whose transfer syntax says JPEG 2000 (no decoder here)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    ds = _dataset(16, 16)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 60])
    return _write(ds)


def _write(ds: object) -> bytes:
    from pydicom import dcmwrite

    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)  # type: ignore[arg-type]
    return buf.getvalue()
