"""Test files for the clinical uploads: a JPEG carrying GPS EXIF, and a small PDF."""

from __future__ import annotations

import struct

import cv2
import numpy as np

GPS_MARK = b"TC-GPS-MARK-31.2304N-121.4737E"
DEVICE = b"TC-DEVICE-PhoneModel-9000"


def _ifd(entries: list[tuple[int, int, int, bytes]], data_at: int, next_ifd: int = 0) -> bytes:
    """A little-endian TIFF IFD: (tag, type, count, value bytes); long values go after it."""
    head = struct.pack("<H", len(entries))
    tail = b""
    base = data_at + 2 + 12 * len(entries) + 4
    for tag, kind, count, value in entries:
        if len(value) <= 4:
            head += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0")
        else:
            head += struct.pack("<HHII", tag, kind, count, base + len(tail))
            tail += value + (b"\0" if len(value) % 2 else b"")
    return head + struct.pack("<I", next_ifd) + tail


def exif_segment(orientation: int = 1) -> bytes:
    """APP1 Exif with a device name, an orientation and a GPS IFD (latitude, longitude,
    and a marker string as the GPS processing method)."""
    make = DEVICE + b"\0"
    # IFD0 at offset 8: Make, Orientation, GPS IFD pointer.
    ifd0_len = 2 + 12 * 3 + 4 + len(make) + (len(make) % 2)
    gps_at = 8 + ifd0_len
    ifd0 = _ifd(
        [
            (0x010F, 2, len(make), make),
            (0x0112, 3, 1, struct.pack("<H", orientation)),
            (0x8825, 4, 1, struct.pack("<I", gps_at)),
        ],
        8,
    )
    rational = struct.pack("<IIIIII", 31, 1, 13, 1, 4826, 100)
    gps = _ifd(
        [
            (0x0001, 2, 2, b"N\0"),
            (0x0002, 5, 3, rational),
            (0x0003, 2, 2, b"E\0"),
            (0x0004, 5, 3, rational),
            (0x001B, 7, len(GPS_MARK), GPS_MARK),
        ],
        gps_at,
    )
    tiff = b"II*\0" + struct.pack("<I", 8) + ifd0 + gps
    body = b"Exif\0\0" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def jpeg_with_gps(width: int = 64, height: int = 32, orientation: int = 1) -> bytes:
    """A real JPEG (left half red, right half blue) with GPS EXIF right after SOI."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = (0, 0, 255)
    pixels[:, width // 2 :] = (255, 0, 0)
    ok, encoded = cv2.imencode(".jpg", pixels)
    assert ok
    data = encoded.tobytes()
    return data[:2] + exif_segment(orientation) + data[2:]


def png(width: int = 16, height: int = 16) -> bytes:
    ok, encoded = cv2.imencode(".png", np.full((height, width, 3), 200, dtype=np.uint8))
    assert ok
    return encoded.tobytes()


def pdf() -> bytes:
    """A one-page PDF with a correct cross-reference table."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out


def decode_qr(image: np.ndarray) -> str:
    """The text of the QR code in ``image``, read with OpenCV's QRCodeDetector, or, when its
    finder-pattern search misses the code (it does for about one generated link-sized code in
    five, however clean the image), with OpenCV's ArUco-based QRCodeDetectorAruco. Either
    way the text must be the link itself."""
    text, points, _ = cv2.QRCodeDetector().detectAndDecode(image)
    if points is not None and text:
        return str(text)
    text, _, _ = cv2.QRCodeDetectorAruco().detectAndDecode(image)
    return str(text)
