"""The Hub: which WebSocket serves which Participant, and fan-out of events to a room.

It is also the Worker's listener (media.worker.WorkerEvents): a Producer opening or
closing becomes track_published/unpublished for everyone in the consultation, and a failed
media session ends its participant's socket.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from media.worker import ProducerInfo
from signaling import protocol as p

if TYPE_CHECKING:
    from signaling.ws import ClientConnection

log = logging.getLogger(__name__)


class Hub:
    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, ClientConnection]] = {}

    def add(self, consultation_id: str, participant_id: str, client: ClientConnection) -> None:
        self._rooms.setdefault(consultation_id, {})[participant_id] = client

    def remove(self, consultation_id: str, participant_id: str) -> None:
        room = self._rooms.get(consultation_id)
        if room is None:
            return
        room.pop(participant_id, None)
        if not room:
            del self._rooms[consultation_id]

    def get(self, consultation_id: str, participant_id: str) -> ClientConnection | None:
        return self._rooms.get(consultation_id, {}).get(participant_id)

    def participant_ids(self, consultation_id: str) -> list[str]:
        return list(self._rooms.get(consultation_id, {}))

    def clients(self) -> list[ClientConnection]:
        return [c for room in self._rooms.values() for c in room.values()]

    def broadcast(
        self, consultation_id: str, message: p._Message, *, exclude: str | None = None
    ) -> None:
        for participant_id, client in list(self._rooms.get(consultation_id, {}).items()):
            if participant_id != exclude:
                client.post(message)

    # ------------------------------------------------------------ WorkerEvents

    def producer_opened(self, consultation_id: str, producer: ProducerInfo) -> None:
        self.broadcast(
            consultation_id,
            p.TrackPublished(
                participantId=producer.participant_id,
                producerId=producer.producer_id,
                kind=producer.kind,
            ),
        )

    def producer_closed(self, consultation_id: str, producer: ProducerInfo) -> None:
        self.broadcast(
            consultation_id,
            p.TrackUnpublished(
                participantId=producer.participant_id,
                producerId=producer.producer_id,
                kind=producer.kind,
            ),
        )

    def session_failed(self, consultation_id: str, participant_id: str, reason: str) -> None:
        client = self.get(consultation_id, participant_id)
        if client is not None:
            client.end(reason)
