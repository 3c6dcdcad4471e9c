"""A Room's chat: relayed to everyone admitted (never the waiting room), kept with the
consultation (signaling/sharing/store.py says where), and handed to each newcomer.

The text is only ever data: it goes out in a typed message and pages set it with
textContent. It is audited by id and length, never its words.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rooms.records.chat import ChatRow, new_chat_id
from signaling import protocol as p
from signaling.room.limits import TokenBucket
from signaling.sharing.store import Keeping

if TYPE_CHECKING:
    from signaling.room.members import Member
    from signaling.room.room import Room

log = logging.getLogger(__name__)

# What a newcomer gets of the chat so far.
HISTORY = 200
# Per person (by identity, so a reconnect does not refill it): a burst of 5, then one a
# second. A person types a line in a few seconds; a script typing faster gets rate_limited.
CHAT_BURST = 5.0
CHAT_PER_S = 1.0


class RoomChat:
    def __init__(self, room: Room, keeping: Keeping) -> None:
        self._room = room
        self._keeping = keeping
        self.history: deque[p.ChatEntry] = deque(maxlen=HISTORY)
        self._loaded: asyncio.Future[None] | None = None
        self._buckets: dict[str, TokenBucket] = {}

    async def _ready(self) -> None:
        """The kept history, read once per Room (a restart, or a call resumed later)."""
        if self._loaded is None:
            self._loaded = asyncio.ensure_future(self._load())
        await asyncio.shield(self._loaded)

    async def _load(self) -> None:
        sharing = self._keeping.sharing
        if sharing is None or not await self._keeping.record():
            return
        try:
            rows = await sharing.chat_history(self._keeping.consultation_id, HISTORY)
        except Exception:
            log.exception("%r: reading the chat history failed", self._room)
            return
        kept = [_entry(r) for r in rows]
        # Anything said while it was being read comes after it.
        self.history = deque([*kept, *self.history], maxlen=HISTORY)

    async def joined(self, member: Member) -> None:
        """The chat so far, in pages, to someone just let in (or back after a reload)."""
        await self._ready()
        entries = list(self.history)
        for start in range(0, len(entries), p.CHAT_PAGE):
            page = entries[start : start + p.CHAT_PAGE]
            more = start + p.CHAT_PAGE < len(entries)
            member.link.post(p.ChatHistory(messages=page, more=more))

    async def say(self, member: Member, message: p.Chat) -> None:
        bucket = self._buckets.setdefault(
            member.grant.identity, TokenBucket(CHAT_PER_S, CHAT_BURST)
        )
        if not bucket.take():
            raise p.ProtocolError("rate_limited", "too many chat messages: slow down", "chat")
        await self._ready()
        now = time.time()
        entry = p.ChatEntry(
            id=new_chat_id(),
            participantId=member.id,
            name=member.participant.name,
            role=str(member.grant.role),
            text=message.text,
            at=now,
        )
        self.history.append(entry)
        self._room.broadcast(p.ChatMessage(**entry.model_dump()))
        cid = self._keeping.consultation_id
        kept = await self._keeping.record()
        self._room.audit.record(
            "chat",
            consultation=cid,
            participant=member.id,
            message=entry.id,
            chars=len(entry.text),
            kept=kept,
        )
        sharing = self._keeping.sharing
        if kept and sharing is not None:
            row = ChatRow(
                id=entry.id,
                participant_id=member.id,
                role=entry.role,
                name=entry.name,
                text=entry.text,
                at=datetime.fromtimestamp(now, UTC),
            )
            self._room.spawn(sharing.keep_chat(cid, row), "keeping a chat message")


def _entry(row: ChatRow) -> p.ChatEntry:
    return p.ChatEntry(
        id=row.id,
        participantId=row.participant_id,
        name=row.name,
        role=row.role,
        text=row.text,
        at=row.at.timestamp(),
    )
