"""Clinical fields at rest: sealed with the consultation's data key, through a protocol.

Patient names, reasons, the display names and links of invitees, attachment names and
opinions are clinical data. Repositories never see a key: they are handed a
``ClinicalCipher`` (implemented in signaling with the recordings' envelope keys: one data key
per consultation, wrapped by the master key), which binds each ciphertext to its
consultation, table, column and row, so a sealed value copied to another row or consultation
does not open. Destroying a consultation's data key (retention) shreds every sealed field of
it at once; what remains of its rows is ids, kinds, states and times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from rooms.records.errors import RecordError


class Shredded(RecordError):
    """The consultation's data key was destroyed (end of retention): its clinical fields are
    gone for good."""

    code = "shredded"


class Unreadable(RecordError):
    """A sealed value fails authentication: altered, or moved from another row."""

    code = "unreadable"


class ClinicalCipher(Protocol):
    async def create_key(self, consultation_id: str) -> None:
        """Make the consultation's data key (once, when its record is created)."""

    async def seal(self, consultation_id: str, plaintext: bytes, context: str) -> bytes:
        """Encrypt under the consultation's existing key; Shredded if it was destroyed."""

    async def open(self, consultation_id: str, sealed: bytes, context: str) -> bytes:
        """Decrypt; Shredded if the key was destroyed, Unreadable if the bytes were altered."""


def context(table: str, column: str, row_id: str) -> str:
    """What a sealed value is bound to besides its consultation."""
    return f"{table}.{column}:{row_id}"


class TextState(StrEnum):
    ok = "ok"
    shredded = "shredded"
    unreadable = "unreadable"


@dataclass(frozen=True)
class ClinicalText:
    """A sealed text as opened for display: the text, or why there is none."""

    text: str | None = field(repr=False)
    state: TextState = TextState.ok

    @property
    def ok(self) -> bool:
        return self.state is TextState.ok


class Sealer:
    """Seals and opens the text fields of one table for the repositories."""

    def __init__(self, cipher: ClinicalCipher, table: str) -> None:
        self.cipher = cipher
        self.table = table

    async def seal(self, consultation_id: str, column: str, row_id: str, text: str) -> bytes:
        return await self.cipher.seal(
            consultation_id, text.encode("utf-8"), context(self.table, column, row_id)
        )

    async def seal_bytes(
        self, consultation_id: str, column: str, row_id: str, data: bytes
    ) -> bytes:
        return await self.cipher.seal(consultation_id, data, context(self.table, column, row_id))

    async def open_bytes(
        self, consultation_id: str, column: str, row_id: str, sealed: bytes
    ) -> bytes:
        return await self.cipher.open(consultation_id, sealed, context(self.table, column, row_id))

    async def open(
        self, consultation_id: str, column: str, row_id: str, sealed: bytes | None
    ) -> ClinicalText:
        """The text, or its state when it cannot be read (never raises for that)."""
        if sealed is None:
            return ClinicalText(None)
        try:
            data = await self.open_bytes(consultation_id, column, row_id, sealed)
        except Shredded:
            return ClinicalText(None, TextState.shredded)
        except Unreadable:
            return ClinicalText(None, TextState.unreadable)
        return ClinicalText(data.decode("utf-8", errors="replace"))
