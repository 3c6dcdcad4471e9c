"""Attachment files: checked, cleaned, encrypted at rest, decrypted on the fly.

An upload is taken only as JPEG, PNG or WebP images or PDF reports, by its bytes (never by
the name or the type the browser claims), at most 20 MiB. Images are decoded and encoded
again with OpenCV, so no metadata survives (EXIF: GPS position, device, time; the pixels are
turned upright first, as EXIF said); their size is read from the header before decoding, so
a small file claiming an enormous picture is refused without allocating it. PDFs are kept
as they are, after a minimal check of their structure. The bytes are written with the
recordings' chunked AES-256-GCM format under the consultation's data key, in
``<data dir>/recordings/consultations/<consultation>/attachments/<id>.enc``, so purging the
consultation shreds them with everything else.

Decoding, encoding and file I/O run in threads, at most two at a time with a few waiting;
beyond that an upload is refused at once (``busy``), so uploads never take the cores the
media Worker forwards on.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import cv2
import numpy as np

from recordings.crypto import EncryptedWriter, decrypt_to_bytes, make_private_dir
from recordings.errors import KeyDestroyedError, RecordingError
from recordings.store import RecordingStore
from rooms.records.attachments import MediaType
from rooms.records.clinical import Shredded, Unreadable
from rooms.records.errors import RecordError

MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
MAX_SIDE = 16_384
_JPEG_QUALITY = 92
_WEBP_QUALITY = 92
_WORKERS = 2
_WAITING = 8
_P = ParamSpec("_P")
_T = TypeVar("_T")
_STARTXREF = re.compile(rb"startxref\s+(\d{1,12})\s+%%EOF", re.S)


class UploadRefused(RecordError):
    """An upload that is not taken; ``code`` says why (too_large, empty, bad_type,
    bad_image, bad_pdf, busy)."""

    code = "bad_upload"


def sniff(data: bytes) -> MediaType:
    """The type the bytes are, whatever the name or the browser says."""
    if data.startswith(b"\xff\xd8\xff"):
        return MediaType.jpeg
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return MediaType.png
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return MediaType.webp
    if data.startswith(b"%PDF-"):
        return MediaType.pdf
    raise UploadRefused("only JPEG, PNG and WebP images and PDF files", code="bad_type")


def image_size(data: bytes, media_type: MediaType) -> tuple[int, int] | None:
    """(width, height) from the header, without decoding; None if it cannot be read."""
    try:
        if media_type is MediaType.png:
            if data[12:16] != b"IHDR":
                return None
            w, h = struct.unpack(">II", data[16:24])
            return w, h
        if media_type is MediaType.webp:
            chunk = data[12:16]
            if chunk == b"VP8X":
                return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(
                    data[27:30], "little"
                )
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
            if chunk == b"VP8L":
                b0, b1, b2, b3 = data[21:25]
                w = 1 + (((b1 & 0x3F) << 8) | b0)
                h = 1 + (((b3 & 0x0F) << 10) | (b2 << 2) | ((b1 & 0xC0) >> 6))
                return w, h
            return None
        if media_type is MediaType.jpeg:
            i = 2
            while i + 9 <= len(data):
                if data[i] != 0xFF:
                    return None
                marker = data[i + 1]
                if marker == 0xFF:  # fill byte
                    i += 1
                    continue
                if marker in (0x01, *range(0xD0, 0xD9)):
                    i += 2
                    continue
                (length,) = struct.unpack(">H", data[i + 2 : i + 4])
                if marker in (
                    0xC0,
                    0xC1,
                    0xC2,
                    0xC3,
                    0xC5,
                    0xC6,
                    0xC7,
                    0xC9,
                    0xCA,
                    0xCB,
                    0xCD,
                    0xCE,
                    0xCF,
                ):
                    h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                    return w, h
                if length < 2:
                    return None
                i += 2 + length
            return None
    except (struct.error, ValueError):
        return None
    return None


def clean_image(data: bytes, media_type: MediaType) -> bytes:
    """Decode and encode again: the pixels only, upright, no metadata. CPU: in a thread."""
    size = image_size(data, media_type)
    if size is None:
        raise UploadRefused("the image's header cannot be read", code="bad_image")
    width, height = size
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE and width * height <= MAX_PIXELS):
        raise UploadRefused("the image is too large in pixels", code="bad_image")
    # JPEG and WebP: IMREAD_COLOR turns the picture as its EXIF orientation says (the tag
    # goes, so it must be applied). PNG keeps its alpha and bit depth.
    flags = cv2.IMREAD_UNCHANGED if media_type is MediaType.png else cv2.IMREAD_COLOR
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if pixels is None or pixels.size == 0:
        raise UploadRefused("the image cannot be decoded", code="bad_image")
    if media_type is MediaType.jpeg:
        ok, out = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    elif media_type is MediaType.webp:
        ok, out = cv2.imencode(".webp", pixels, [cv2.IMWRITE_WEBP_QUALITY, _WEBP_QUALITY])
    else:
        ok, out = cv2.imencode(".png", pixels)
    if not ok:
        raise UploadRefused("the image cannot be encoded again", code="bad_image")
    return out.tobytes()


def check_pdf(data: bytes) -> None:
    """A minimal structural check: a header, and a cross-reference offset inside the file
    followed by the end-of-file marker, near the end."""
    if re.match(rb"%PDF-\d\.\d", data) is None:
        raise UploadRefused("not a PDF file", code="bad_pdf")
    found = _STARTXREF.findall(data[-4096:])
    if not found or int(found[-1]) >= len(data) or b" obj" not in data:
        raise UploadRefused("the PDF file is damaged or incomplete", code="bad_pdf")


class AttachmentFiles:
    def __init__(self, store: RecordingStore) -> None:
        self._store = store
        self._slots = asyncio.Semaphore(_WORKERS)
        self._queued = 0

    def path(self, consultation_id: str, attachment_id: str, folder: str = "attachments") -> Path:
        """``folder``: ``attachments``, or ``shared`` for images shown in a call."""
        return self._store.consultation_dir(consultation_id) / folder / f"{attachment_id}.enc"

    async def prepare(self, data: bytes) -> tuple[MediaType, bytes]:
        """What will be stored: the type and the (cleaned) bytes, or UploadRefused."""
        if not data:
            raise UploadRefused("the file is empty", code="empty")
        if len(data) > MAX_FILE_BYTES:
            raise UploadRefused("the file is larger than 20 MiB", code="too_large")
        media_type = sniff(data)
        if media_type is MediaType.pdf:
            await self.run(check_pdf, data)
            return media_type, data
        return media_type, await self.run(clean_image, data, media_type)

    async def save(
        self, consultation_id: str, attachment_id: str, data: bytes, folder: str = "attachments"
    ) -> str:
        """Encrypt ``data`` to the attachment's file; returns the plaintext's SHA-256."""
        return await self.run(self._write, consultation_id, attachment_id, data, folder)

    async def load(
        self, consultation_id: str, attachment_id: str, sha256: str, folder: str = "attachments"
    ) -> bytes:
        """The plaintext, checked against the SHA-256 its record holds."""
        return await self.run(self._read, consultation_id, attachment_id, sha256, folder)

    async def discard(
        self, consultation_id: str, attachment_id: str, folder: str = "attachments"
    ) -> None:
        await asyncio.to_thread(self.path(consultation_id, attachment_id, folder).unlink, True)

    def _write(self, consultation_id: str, attachment_id: str, data: bytes, folder: str) -> str:
        key = self._data_key(consultation_id)
        path = self.path(consultation_id, attachment_id, folder)
        make_private_dir(path.parent)
        writer = EncryptedWriter.create(path, key)
        try:
            writer.write(data)
        finally:
            writer.close()
        return hashlib.sha256(data).hexdigest()

    def _read(self, consultation_id: str, attachment_id: str, sha256: str, folder: str) -> bytes:
        key = self._data_key(consultation_id)
        try:
            data = decrypt_to_bytes(self.path(consultation_id, attachment_id, folder), key)
        except (RecordingError, OSError):
            raise Unreadable("the attachment's file is missing or damaged") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise Unreadable("the attachment's file is not the one recorded")
        return data

    def _data_key(self, consultation_id: str) -> bytes:
        keystore = self._store.keystore
        if not keystore.has_key(consultation_id):
            raise Shredded("this consultation's data key has been destroyed")
        try:
            return keystore.data_key(consultation_id)
        except KeyDestroyedError:
            raise Shredded("this consultation's data key has been destroyed") from None

    async def run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``fn`` in a thread, two at a time for the whole node (uploads to the front desk and
        images shown in calls alike); a few waiting at most, past that UploadRefused
        (``busy``) at once rather than a queue."""
        if self._queued >= _WORKERS + _WAITING:
            raise UploadRefused("too many uploads at once: try again", code="busy")
        self._queued += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(fn, *args, **kwargs)
        finally:
            self._queued -= 1
