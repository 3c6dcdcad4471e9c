"""Errors of the recordings package: every one names the file it is about.

The classes are distinct so that callers (verify, the API, the CLI) can tell damage from a
crash from a misconfiguration without parsing messages.
"""

from __future__ import annotations

from pathlib import Path


class RecordingError(Exception):
    """Base class. ``path`` is the file concerned (None when no file is involved)."""

    def __init__(self, path: Path | str | None, reason: str) -> None:
        self.path = Path(path) if path is not None else None
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path is not None else reason)


class FormatError(RecordingError):
    """Not a teleconsult encrypted file (wrong magic or unknown version)."""


class TamperedError(RecordingError):
    """A chunk, the header or a wrapped key fails authentication: the bytes were changed."""


class ReorderedError(TamperedError):
    """A chunk authenticates, but under another index than its position: chunks were moved."""


class TruncatedError(RecordingError):
    """The file ends before its final chunk: the writer was killed or the disk filled up.

    Everything before ``readable_bytes`` of plaintext is intact and authenticated.
    """

    def __init__(self, path: Path | str | None, reason: str, readable_bytes: int = 0) -> None:
        super().__init__(path, reason)
        self.readable_bytes = readable_bytes


class WrongKeyError(RecordingError):
    """The key offered is not the one the file (or the wrapped data key) was made with."""


class KeyDestroyedError(RecordingError):
    """The consultation's data key was destroyed (crypto-shredded) or never existed."""


class ConsentError(RecordingError):
    """Recording was asked for while someone present has not consented."""


class LegalHoldError(RecordingError):
    """A consultation under legal hold cannot be purged."""
