"""Attachments: only images and PDFs, by their bytes; images re-encoded so no EXIF (GPS,
device) survives and turned upright first; a small file claiming an enormous picture refused
before decoding; damaged PDFs refused; encrypted at rest and checked on the way back; and
the multipart forms they come in, parsed exactly from bytes."""

from __future__ import annotations

import secrets
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from recordings.store import RecordingStore
from rooms.records.attachments import MediaType
from rooms.records.clinical import Shredded, Unreadable
from signaling.console.attachments import (
    MAX_FILE_BYTES,
    AttachmentFiles,
    UploadRefused,
    clean_image,
    image_size,
    sniff,
)
from signaling.console.forms import MAX_PARTS, BadForm, parse_multipart
from tests.clinic_images import DEVICE, GPS_MARK, jpeg_with_gps, pdf, png


def test_a_jpeg_loses_its_gps_and_device_and_is_turned_upright() -> None:
    original = jpeg_with_gps(64, 32, orientation=6)  # "rotate 90° clockwise to view"
    assert GPS_MARK in original and DEVICE in original and b"Exif" in original
    cleaned = clean_image(original, MediaType.jpeg)
    assert GPS_MARK not in cleaned and DEVICE not in cleaned
    assert b"Exif" not in cleaned and b"\xff\xe1" not in cleaned[:64]
    pixels = cv2.imdecode(np.frombuffer(cleaned, np.uint8), cv2.IMREAD_COLOR)
    assert pixels.shape[:2] == (64, 32)  # the orientation was applied, then dropped
    assert sniff(cleaned) is MediaType.jpeg


@pytest.mark.parametrize("kind", [".png", ".webp"])
def test_png_and_webp_are_re_encoded_too(kind: str) -> None:
    pixels = np.zeros((20, 30, 3), dtype=np.uint8)
    pixels[:, :15] = (0, 255, 0)
    ok, encoded = cv2.imencode(kind, pixels)
    assert ok
    data = encoded.tobytes()
    media_type = sniff(data)
    assert image_size(data, media_type) == (30, 20)
    cleaned = clean_image(data, media_type)
    assert sniff(cleaned) is media_type
    assert cv2.imdecode(np.frombuffer(cleaned, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (20, 30)


def _png_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"GIF89a....", "bad_type"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "bad_type"),
        (b"MZ\x90\x00 an executable", "bad_type"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 100, "bad_image"),
        (_png_claiming(60_000, 60_000), "bad_image"),
        (_png_claiming(20_000, 10), "bad_image"),
        (png()[:40], "bad_image"),
    ],
)
async def test_bad_files_are_refused_with_a_reason(tmp_path: Path, data: bytes, code: str) -> None:
    files = AttachmentFiles(RecordingStore(tmp_path, secrets.token_bytes(32)))
    with pytest.raises(UploadRefused) as refused:
        await files.prepare(data)
    assert refused.value.code == code


async def test_size_and_pdf_checks(tmp_path: Path) -> None:
    files = AttachmentFiles(RecordingStore(tmp_path, secrets.token_bytes(32)))
    for data, code in (
        (b"", "empty"),
        (b"%PDF-1.4\n" + b"0" * MAX_FILE_BYTES, "too_large"),
        (pdf()[:-30], "bad_pdf"),
        (b"%PDF-1.4\nstartxref\n999999\n%%EOF\n", "bad_pdf"),
        (b"%PDF-x", "bad_pdf"),
    ):
        with pytest.raises(UploadRefused) as refused:
            await files.prepare(data)
        assert refused.value.code == code, code
    assert await files.prepare(pdf()) == (MediaType.pdf, pdf())


async def test_files_are_encrypted_at_rest_and_checked_on_the_way_back(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path, secrets.token_bytes(32))
    store.keystore.get_or_create("consult-1")
    files = AttachmentFiles(store)
    data = pdf() + b"% a marker that must not be readable on disk"
    sha = await files.save("consult-1", "att_0000000000000001", data)
    path = files.path("consult-1", "att_0000000000000001")
    assert path.parent.stat().st_mode & 0o777 == 0o700 and path.stat().st_mode & 0o777 == 0o600
    assert b"marker" not in path.read_bytes() and b"%PDF" not in path.read_bytes()
    assert await files.load("consult-1", "att_0000000000000001", sha) == data
    with pytest.raises(Unreadable):
        await files.load("consult-1", "att_0000000000000001", "0" * 64)
    raw = bytearray(path.read_bytes())
    raw[-20] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(Unreadable):
        await files.load("consult-1", "att_0000000000000001", sha)
    store.keystore.destroy_key("consult-1")
    with pytest.raises(Shredded):
        await files.load("consult-1", "att_0000000000000001", sha)


# ------------------------------------------------------------------ multipart


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "xYz-42") -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += (
            (
                f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode()


def test_multipart_parts_come_back_byte_exact() -> None:
    binary = bytes(range(256)) * 64 + b"\r\n--xYz-4\r\n\r\n--" + secrets.token_bytes(5000)
    body = _multipart(
        [
            ("csrf", None, b"tok"),
            ("attachments", "a b 赵.jpg", binary),
            ("reason", None, "胸痛\r\nline two".encode()),
        ]
    )
    form = parse_multipart(body, "multipart/form-data; boundary=xYz-42")
    assert form.get("csrf") == "tok" and form.get("reason") == "胸痛\r\nline two"
    (part,) = form.files
    assert part.name == "attachments" and part.filename == "a b 赵.jpg" and part.data == binary


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"no parts here", "multipart/form-data; boundary=b"),
        (
            b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\nno end',
            "multipart/form-data; boundary=b",
        ),
        (b"--b\r\nX-Other: 1\r\n\r\nv\r\n--b--", "multipart/form-data; boundary=b"),
        (b"--b\r\n\r\nv\r\n--b--", "multipart/form-data; boundary=b"),
        (b"--b--", "multipart/form-data"),
        (_multipart([("f", None, b"x")] * (MAX_PARTS + 1), "b"), "multipart/form-data; boundary=b"),
        (_multipart([("f", None, b"\xff\xfe")], "b"), "multipart/form-data; boundary=b"),
    ],
)
def test_malformed_multipart_is_refused(body: bytes, content_type: str) -> None:
    with pytest.raises(BadForm):
        parse_multipart(body, content_type)
