"""An upload to show in a call, made safe to show: its type sniffed from the bytes, photos
re-encoded by the front desk's ``clean_image`` (no EXIF, turned upright), DICOM rendered
per window preset by ``dicom.render`` (no patient tag survives). CPU work: in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rooms.records.attachments import MediaType
from signaling.console.attachments import UploadRefused, clean_image, image_size, sniff
from signaling.sharing import dicom

MAX_PHOTO_BYTES = 20 * 1024 * 1024
MAX_DICOM_BYTES = dicom.MAX_DICOM_BYTES
# A photo has one rendition.
ORIGINAL = "original"


@dataclass(frozen=True)
class PreparedImage:
    kind: str  # photo | dicom
    media_type: str  # of every rendition
    width: int
    height: int
    # preset -> bytes, the default first.
    renditions: dict[str, bytes] = field(repr=False)
    info: dicom.DicomInfo | None = None

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.renditions.values())


def prepare(data: bytes) -> PreparedImage:
    """What will be shown and stored, or UploadRefused with the reason (a typed ``code``)."""
    if not data:
        raise UploadRefused("the file is empty", code="empty")
    if dicom.is_dicom(data):
        try:
            rendered = dicom.render(data)
        except dicom.DicomRefused as exc:
            raise UploadRefused(str(exc), code="bad_dicom") from None
        return PreparedImage(
            "dicom",
            MediaType.png.value,
            rendered.width,
            rendered.height,
            rendered.renditions,
            rendered.info,
        )
    if len(data) > MAX_PHOTO_BYTES:
        raise UploadRefused("an image is at most 20 MB", code="too_large")
    try:
        media_type = sniff(data)
    except UploadRefused:
        raise UploadRefused(
            "only JPEG, PNG and WebP images and DICOM files", code="bad_type"
        ) from None
    if not media_type.is_image:
        raise UploadRefused("only JPEG, PNG and WebP images and DICOM files", code="bad_type")
    cleaned = clean_image(data, media_type)
    width, height = _size(cleaned, media_type)
    return PreparedImage("photo", media_type.value, width, height, {ORIGINAL: cleaned})


def _size(encoded: bytes, media_type: MediaType) -> tuple[int, int]:
    """(width, height) of our own re-encoding, from its header."""
    size = image_size(encoded, media_type)
    if size is None:
        raise UploadRefused("the image cannot be encoded again", code="bad_image")
    return size
