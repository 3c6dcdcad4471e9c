"""The in-process media Worker: the embedded default, one event loop, one core.

A Worker holds MediaRooms, one per consultation placed on it; a MediaRoom routes every
Producer to a Consumer in every other subscribing session (mediasoup calls this a Router).
Signaling drives a Worker through this class and hears back through WorkerEvents; the
Redis-backed deployment puts the same interface behind a bus.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from media.config import MediaConfig
from media.ice import restrict_host_addresses
from media.producer import Producer, RoomSink
from media.session import Kind, PeerSession, SessionSignal
from media.tap import send_remb, use_fast_clock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProducerInfo:
    producer_id: str
    participant_id: str
    kind: Kind


class WorkerEvents(Protocol):
    def producer_opened(self, consultation_id: str, producer: ProducerInfo) -> None: ...

    def producer_closed(self, consultation_id: str, producer: ProducerInfo) -> None: ...

    def session_failed(self, consultation_id: str, participant_id: str, reason: str) -> None: ...


def _info(producer: Producer) -> ProducerInfo:
    kind: Kind = "video" if producer.kind == "video" else "audio"
    return ProducerInfo(producer.id, producer.participant_id, kind)


class MediaRoom:
    def __init__(self, consultation_id: str, events: WorkerEvents) -> None:
        self.consultation_id = consultation_id
        self.sessions: dict[str, PeerSession] = {}
        self.producers: dict[str, Producer] = {}
        self.sinks: list[RoomSink] = []
        self._events = events

    def attach(self, sink: RoomSink) -> None:
        self.sinks.append(sink)
        for producer in self.producers.values():
            sink.producer_opened(producer)

    def detach(self, sink: RoomSink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)

    def producer_opened(self, producer: Producer) -> None:
        self.producers[producer.id] = producer
        producer.sinks = self.sinks
        for sink in self.sinks:
            sink.producer_opened(producer)
        for session in self.sessions.values():
            if session.subscribe and session.participant_id != producer.participant_id:
                session.consume(producer)
        self._events.producer_opened(self.consultation_id, _info(producer))

    def session_failed(self, session: PeerSession, reason: str) -> None:
        log.warning("%r failed: %s", session, reason)
        self._events.session_failed(self.consultation_id, session.participant_id, reason)

    def add(self, session: PeerSession) -> None:
        self.sessions[session.participant_id] = session
        if session.subscribe:
            for producer in self.producers.values():
                session.consume(producer)

    async def remove(self, participant_id: str) -> None:
        session = self.sessions.pop(participant_id, None)
        if session is None:
            return
        gone = list(session.producers.values())
        for producer in gone:
            self.producers.pop(producer.id, None)
            for sink in self.sinks:
                sink.producer_closed(producer)
            for other in self.sessions.values():
                other.stop_consuming(producer.id)
        await session.close()
        for producer in gone:
            self._events.producer_closed(self.consultation_id, _info(producer))


REMB_INTERVAL_S = 1.0


class Worker:
    def __init__(self, config: MediaConfig, events: WorkerEvents) -> None:
        self.config = config
        self.rooms: dict[str, MediaRoom] = {}
        self._events = events
        self._bandwidth: asyncio.Task[None] | None = None
        restrict_host_addresses(config.ice_addresses)
        use_fast_clock()

    async def _cap_bandwidth(self) -> None:
        """Every second, ask each video publisher for at most the configured bitrate.

        The Worker decides what goes upstream (DESIGN.md): aiortc ignores subscribers' REMB
        on the forwarding path, and its own estimate starves publishers. Browsers still lower
        their rate on loss (RTCP receiver reports), so this is a ceiling, not a floor.
        """
        while True:
            await asyncio.sleep(REMB_INTERVAL_S)
            for room in list(self.rooms.values()):
                for producer in list(room.producers.values()):
                    if producer.kind == "video" and not producer.closed:
                        try:
                            await send_remb(producer.receiver, self.config.max_video_bitrate)
                        except ConnectionError:
                            pass

    def open_session(
        self,
        consultation_id: str,
        participant_id: str,
        *,
        publish: tuple[Kind, ...],
        subscribe: bool,
        signal: SessionSignal,
    ) -> PeerSession:
        room = self.rooms.get(consultation_id)
        if room is None:
            room = self.rooms[consultation_id] = MediaRoom(consultation_id, self._events)
        if participant_id in room.sessions:
            raise ValueError(f"participant {participant_id} already has a session")
        session = PeerSession(
            room,
            participant_id,
            publish=publish,
            subscribe=subscribe,
            signal=signal,
            config=self.config,
        )
        room.add(session)
        session.start()
        if self._bandwidth is None or self._bandwidth.done():
            self._bandwidth = asyncio.get_running_loop().create_task(
                self._cap_bandwidth(), name="worker-bandwidth"
            )
        return session

    def room(self, consultation_id: str) -> MediaRoom | None:
        return self.rooms.get(consultation_id)

    def session(self, consultation_id: str, participant_id: str) -> PeerSession | None:
        room = self.rooms.get(consultation_id)
        return room.sessions.get(participant_id) if room else None

    async def close_session(self, consultation_id: str, participant_id: str) -> None:
        room = self.rooms.get(consultation_id)
        if room is None:
            return
        await room.remove(participant_id)
        # Another close may have emptied and dropped the room during the await above.
        if not room.sessions and self.rooms.get(consultation_id) is room:
            del self.rooms[consultation_id]

    async def close(self) -> None:
        if self._bandwidth is not None:
            self._bandwidth.cancel()
        for consultation_id, room in list(self.rooms.items()):
            for participant_id in list(room.sessions):
                await self.close_session(consultation_id, participant_id)

    def stats(self) -> dict[str, int]:
        sessions = [s for room in self.rooms.values() for s in room.sessions.values()]
        return {
            "rooms": len(self.rooms),
            "sessions": len(sessions),
            "producers": sum(len(r.producers) for r in self.rooms.values()),
            "consumers": sum(len(s.consumers) for s in sessions),
        }
