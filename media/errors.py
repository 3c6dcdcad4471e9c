"""Errors the media Worker reports about a participant's input; never about anyone else."""

from __future__ import annotations

import re
from typing import Literal

MediaErrorCode = Literal[
    "bad_sdp", "bad_candidate", "unexpected", "forbidden", "too_many_producers"
]

# IPv4 and IPv6 literals: a participant's addresses stay out of the logs.
_ADDRESS = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}|(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}")


class MediaError(Exception):
    def __init__(self, code: MediaErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: MediaErrorCode = code
        self.message = message


def loggable(text: str, limit: int = 200) -> str:
    """Text a participant influenced, fit for one log line: addresses masked, control
    characters escaped (no forged lines, no terminal escapes), bounded."""
    text = _ADDRESS.sub("<address>", text)
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
