"""A call's chat, kept with the consultation's record: the sender's name and the text sealed
with the consultation's data key, so ``recordings purge`` shreds them with the rest.

Only consultations that have a record keep their chat here (``has_record``); a call by a
bare invitation link has no record, no data key made with one, and no page that shows it
(signaling/room/chat.py keeps that chat in the Room's memory instead).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import insert, select

from rooms.records.clinical import ClinicalCipher, Sealer, Shredded, Unreadable
from rooms.records.database import Database
from rooms.records.ids import new_id
from rooms.records.schema import chat_messages, consultations


def new_chat_id() -> str:
    return new_id("msg")


@dataclass(frozen=True)
class ChatRow:
    id: str
    participant_id: str
    role: str
    name: str = field(repr=False)
    text: str = field(repr=False)
    at: datetime


class ChatMessages:
    def __init__(self, database: Database, cipher: ClinicalCipher) -> None:
        self._db = database
        self._sealer = Sealer(cipher, "chat_messages")

    async def has_record(self, consultation_id: str) -> bool:
        query = select(consultations.c.id).where(consultations.c.id == consultation_id)
        async with self._db.engine.connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def add(self, consultation_id: str, row: ChatRow) -> None:
        body = json.dumps({"name": row.name, "text": row.text}, ensure_ascii=False)
        sealed = await self._sealer.seal(consultation_id, "body", row.id, body)
        async with self._db.engine.begin() as conn:
            await conn.execute(
                insert(chat_messages).values(
                    id=row.id,
                    consultation_id=consultation_id,
                    participant_id=row.participant_id,
                    role=row.role,
                    body_sealed=sealed,
                    created_at=row.at,
                )
            )

    async def recent(self, consultation_id: str, limit: int) -> list[ChatRow]:
        """The newest ``limit`` messages that can still be read, oldest first (a shredded
        consultation has none)."""
        query = (
            select(chat_messages)
            .where(chat_messages.c.consultation_id == consultation_id)
            .order_by(chat_messages.c.created_at.desc(), chat_messages.c.id.desc())
            .limit(limit)
        )
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        out: list[ChatRow] = []
        for r in reversed(rows):
            try:
                raw = await self._sealer.open_bytes(
                    consultation_id, "body", r["id"], bytes(r["body_sealed"])
                )
                body = json.loads(raw)
            except (Shredded, Unreadable, ValueError):
                continue
            out.append(
                ChatRow(
                    id=r["id"],
                    participant_id=r["participant_id"],
                    role=r["role"],
                    name=str(body.get("name", "")),
                    text=str(body.get("text", "")),
                    at=r["created_at"],
                )
            )
        return out
