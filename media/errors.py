"""Errors the media Worker reports about a participant's input; never about anyone else."""

from __future__ import annotations

from typing import Literal

MediaErrorCode = Literal["bad_sdp", "bad_candidate", "unexpected", "forbidden"]


class MediaError(Exception):
    def __init__(self, code: MediaErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: MediaErrorCode = code
        self.message = message
