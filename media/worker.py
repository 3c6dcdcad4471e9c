"""The media Worker: one event loop, one core, the MediaRooms placed on it.

A MediaRoom routes every Producer of a consultation to a Consumer in every other subscribing
session (mediasoup calls this a Router), and feeds its recording, if any. The Worker is
driven by ids (media/client.py's WorkerClient is the seam; media/local.py wraps this class
for the embedded default) and reports through WorkerEvents: no live aiortc object leaves it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from media import meter
from media.client import (
    ExtraSource,
    Kind,
    ProducerInfo,
    QualitySample,
    SlotDescription,
    Source,
    WorkerEvents,
    WorkerMetrics,
    WorkerStats,
    main_source,
)
from media.codecs import choose_video_codec
from media.config import MediaConfig, VideoCodec
from media.errors import MediaError
from media.ice import restrict_host_addresses, restrict_ports
from media.loop_lag import LoopLag
from media.producer import Producer, RoomSink
from media.quality import QualitySampler
from media.rate import publisher_ceiling
from media.session import PeerSession
from media.speaker import ActiveSpeaker
from media.tap import send_remb, use_fast_clock

log = logging.getLogger(__name__)

REMB_INTERVAL_S = 1.0
# Why a recording failed, as its events say (a refused consent is no failure): counted
# from zero so an alert can watch them before the first one.
RECORDING_FAILURES = ("start_failed", "disk_full", "error")


class RoomRecording(RoomSink, Protocol):
    """A recording of one MediaRoom (recordings/room_recorder.py): a RoomSink it can steer.

    Its disk work must leave the event loop: every method only enqueues.
    """

    recording_id: str
    # Media bytes accepted for writing, and frames dropped because the disk was behind.
    recorded_bytes: int
    dropped_frames: int

    def start(
        self, roles: dict[str, str], consents: dict[str, bool], *, resume: bool = False
    ) -> None: ...

    def consent(self, participant_id: str, granted: bool, role: str | None) -> None: ...

    def stop(self, reason: str) -> None: ...


# (consultation id, recording id, on_event, request_keyframe(producer id)) -> RoomRecording
RecordingFactory = Callable[
    [str, str, Callable[[dict[str, Any]], None], Callable[[str], None]], RoomRecording
]


def _info(producer: Producer) -> ProducerInfo:
    kind: Kind = "video" if producer.kind == "video" else "audio"
    source: Source = producer.source  # type: ignore[assignment]
    return ProducerInfo(producer.id, producer.participant_id, kind, source)


class MediaRoom:
    def __init__(self, consultation_id: str, events: WorkerEvents, video_codec: VideoCodec) -> None:
        self.consultation_id = consultation_id
        # Every video m-line of the room offers this one codec, so frames forward unchanged.
        self.video_codec: VideoCodec = video_codec
        self.sessions: dict[str, PeerSession] = {}
        self.producers: dict[str, Producer] = {}
        self.sinks: list[RoomSink] = []
        self.recording: RoomRecording | None = None
        # Sources paused per participant ("camera" for a paused video kind): a Producer
        # opening later starts paused too (a muted participant who republishes stays muted).
        self.paused_publishers: dict[str, set[Source]] = {}
        self.paused_subscribers: dict[str, set[Kind]] = {}
        # Subscribers who receive only the active speaker's video (a low-bandwidth mode),
        # and whose video each is being sent: told to them as a ``video_speaker`` notice.
        self.following: dict[str, str | None] = {}
        self.speaker = ActiveSpeaker(self._refresh_followers)
        self.sinks.append(self.speaker)
        self._events = events

    def __repr__(self) -> str:
        return f"MediaRoom({self.consultation_id}, sessions={len(self.sessions)})"

    # ------------------------------------------------------------ sinks

    def attach(self, sink: RoomSink) -> None:
        self.sinks.append(sink)
        for producer in self.producers.values():
            sink.producer_opened(producer)

    def detach(self, sink: RoomSink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)

    # ------------------------------------------------------------ from sessions

    def send_offer(self, session: PeerSession, sdp: str, slots: list[SlotDescription]) -> None:
        self._events.offer(self.consultation_id, session.participant_id, sdp, slots)

    def notice(self, session: PeerSession, code: str, message: str) -> None:
        self._events.notice(self.consultation_id, session.participant_id, code, message)

    def session_failed(self, session: PeerSession, reason: str) -> None:
        log.warning("%r failed: %s", session, reason)
        self._events.session_failed(self.consultation_id, session.participant_id, reason)

    def producer_opened(self, producer: Producer) -> None:
        self.producers[producer.id] = producer
        producer.sinks = self.sinks
        kind: Kind = "video" if producer.kind == "video" else "audio"
        if producer.source in self.paused_publishers.get(producer.participant_id, ()):
            producer.pause()
        for sink in self.sinks:
            sink.producer_opened(producer)
        for session in self.sessions.values():
            if session.subscribe and session.participant_id != producer.participant_id:
                self._consume(session, producer)
        self._events.producer_opened(self.consultation_id, _info(producer))
        if kind == "video":
            self._refresh_followers()

    def producer_closed(self, producer: Producer) -> None:
        """One Producer of a session that goes on (an extra video stopped)."""
        if self.producers.pop(producer.id, None) is None:
            return
        for sink in self.sinks:
            sink.producer_closed(producer)
        for other in self.sessions.values():
            other.stop_consuming(producer.id)
        self._events.producer_closed(self.consultation_id, _info(producer))
        if producer.kind == "video":
            self._refresh_followers()

    def _consume(self, session: PeerSession, producer: Producer) -> None:
        consumer = session.consume(producer)
        if consumer is not None:
            meter.watch(session)
        if consumer is not None and self._withheld(session.participant_id, producer):
            consumer.pause()

    def _withheld(self, subscriber_id: str, producer: Producer) -> bool:
        """Whether this subscriber is to be sent nothing of this Producer: its kind paused
        for them, or a video that is not the speaker's they follow."""
        if producer.kind in self.paused_subscribers.get(subscriber_id, ()):
            return True
        return (
            producer.kind == "video"
            and subscriber_id in self.following
            and producer.participant_id != self.following[subscriber_id]
        )

    def _apply(self, subscriber_id: str) -> None:
        session = self.sessions.get(subscriber_id)
        for consumer in list(session.consumers.values()) if session else ():
            withheld = self._withheld(subscriber_id, consumer.producer)
            if withheld and not consumer.paused:
                consumer.pause()
            elif not withheld and consumer.paused:
                consumer.resume()

    # ------------------------------------------------------------ sessions

    def add(self, session: PeerSession) -> None:
        self.sessions[session.participant_id] = session
        if session.subscribe:
            for producer in self.producers.values():
                self._consume(session, producer)

    async def remove(self, participant_id: str) -> None:
        session = self.sessions.pop(participant_id, None)
        self.paused_publishers.pop(participant_id, None)
        self.paused_subscribers.pop(participant_id, None)
        self.following.pop(participant_id, None)
        self.speaker.forget(participant_id)
        if not self.following:
            self.speaker.stop()
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
        self._refresh_followers()

    # ------------------------------------------------------------ pause / resume

    def pause_producers(
        self, participant_id: str, kind: Kind, paused: bool, source: Source | None = None
    ) -> None:
        """``source`` None: the participant's main Producer of ``kind`` (a camera turned
        off leaves a screen share running); else the Producer of that source."""
        wanted = source or main_source(kind)
        sources = self.paused_publishers.setdefault(participant_id, set())
        (sources.add if paused else sources.discard)(wanted)
        session = self.sessions.get(participant_id)
        for producer in session.producers.values() if session else ():
            if producer.source == wanted:
                producer.pause() if paused else producer.resume()

    def pause_consumers(self, subscriber_id: str, kind: Kind, paused: bool) -> None:
        kinds = self.paused_subscribers.setdefault(subscriber_id, set())
        (kinds.add if paused else kinds.discard)(kind)
        self._apply(subscriber_id)

    # ------------------------------------------------------------ following the speaker

    def follow_speaker(self, subscriber_id: str, follow: bool) -> None:
        if not follow:
            self.following.pop(subscriber_id, None)
            self._apply(subscriber_id)
            if not self.following:
                self.speaker.stop()
            return
        if subscriber_id not in self.sessions:
            return
        self.following[subscriber_id] = None
        self.speaker.start()
        self._refresh_followers(told=subscriber_id)

    def _shown_to(self, subscriber_id: str) -> str | None:
        """The most recent speaker other than the subscriber who publishes video; before
        anyone has spoken, the first such publisher."""
        publishing = [
            p.participant_id
            for p in self.producers.values()
            if p.kind == "video" and p.participant_id != subscriber_id
        ]
        for participant in self.speaker.order:
            if participant in publishing:
                return participant
        return publishing[0] if publishing else None

    def _refresh_followers(self, told: str | None = None) -> None:
        """After a switch of speaker, or video coming or going: each follower is sent the
        video they should see, and told whose it is when that changes (``told``: tell this
        one whatever it is)."""
        for subscriber_id, was in list(self.following.items()):
            shown = self._shown_to(subscriber_id)
            self.following[subscriber_id] = shown
            self._apply(subscriber_id)
            if shown != was or subscriber_id == told:
                self._events.notice(
                    self.consultation_id, subscriber_id, "video_speaker", shown or ""
                )

    def request_keyframe(self, producer_id: str) -> None:
        producer = self.producers.get(producer_id)
        if producer is not None:
            producer.request_keyframe()


class Worker:
    def __init__(
        self,
        config: MediaConfig,
        events: WorkerEvents,
        *,
        recordings: RecordingFactory | None = None,
    ) -> None:
        self.config = config
        self.rooms: dict[str, MediaRoom] = {}
        self._events = events
        self._recordings = recordings
        self._bandwidth: asyncio.Task[None] | None = None
        self._measuring: asyncio.Task[None] | None = None
        self._sampler = QualitySampler()
        self._tally = meter.Tally()
        self._round_trips = meter.Buckets(meter.ROUND_TRIP_BOUNDS)
        self.loop_lag = LoopLag()
        self._recorded_bytes = 0
        self._recording_dropped_frames = 0
        self._recording_failures = dict.fromkeys(RECORDING_FAILURES, 0)
        self._measure_failed = False
        restrict_host_addresses(config.ice_addresses)
        restrict_ports(config.udp_ports)
        use_fast_clock()

    async def _cap_bandwidth(self) -> None:
        """Every second, ask each video publisher for at most what its best-served
        subscriber can take (media/rate.py publisher_ceiling), never above the configured
        bitrate.

        The Worker decides what goes upstream (DESIGN.md): aiortc ignores subscribers' REMB
        on the forwarding path, and its own estimate starves publishers. Browsers still lower
        their rate on loss (RTCP receiver reports), so this is a ceiling, not a floor.
        """
        while True:
            await asyncio.sleep(REMB_INTERVAL_S)
            for room in list(self.rooms.values()):
                for producer in list(room.producers.values()):
                    if producer.kind == "video" and not producer.closed:
                        estimates = [
                            c.estimator.bps
                            for c in producer.consumers
                            if c.estimator is not None and c.slot.active and not c.paused
                        ]
                        # Any sink but the room's active-speaker detector is a recording.
                        recording = any(sink is not room.speaker for sink in room.sinks)
                        bitrate = publisher_ceiling(
                            self.config.max_video_bitrate, estimates, recording
                        )
                        try:
                            await send_remb(producer.receiver, bitrate)
                        except ConnectionError:
                            pass

    # ------------------------------------------------------------ sessions

    def open_session(
        self,
        consultation_id: str,
        participant_id: str,
        *,
        publish: tuple[Kind, ...],
        subscribe: bool,
        video_codecs: frozenset[VideoCodec] | None = None,
    ) -> PeerSession:
        """``video_codecs``: what the participant can send and receive; None means both."""
        room = self.rooms.get(consultation_id)
        if room is None:
            codec = choose_video_codec(self.config.video_codec, video_codecs)
            room = self.rooms[consultation_id] = MediaRoom(consultation_id, self._events, codec)
            log.info("room %s: video codec %s", consultation_id, codec)
        if participant_id in room.sessions:
            raise MediaError("unexpected", f"participant {participant_id} already has a session")
        session = PeerSession(
            room,
            participant_id,
            publish=publish,
            subscribe=subscribe,
            config=self.config,
            video=video_codecs is None or room.video_codec in video_codecs,
        )
        room.add(session)
        session.start()
        meter.watch(session)
        # Its quality is measured from now: the first sample includes connecting.
        self._sample(session)
        if self._bandwidth is None or self._bandwidth.done():
            self._bandwidth = asyncio.get_running_loop().create_task(
                self._cap_bandwidth(), name="worker-bandwidth"
            )
        self.start_measuring()
        return session

    def room(self, consultation_id: str) -> MediaRoom | None:
        return self.rooms.get(consultation_id)

    def session(self, consultation_id: str, participant_id: str) -> PeerSession | None:
        room = self.rooms.get(consultation_id)
        return room.sessions.get(participant_id) if room else None

    def _session(self, consultation_id: str, participant_id: str) -> PeerSession:
        session = self.session(consultation_id, participant_id)
        if session is None:
            raise MediaError("unexpected", "no media session for this participant")
        return session

    async def answer(self, consultation_id: str, participant_id: str, sdp: str) -> None:
        await self._session(consultation_id, participant_id).accept_answer(sdp)

    async def candidate(
        self,
        consultation_id: str,
        participant_id: str,
        candidate: str | None,
        sdp_mid: str | None,
        sdp_mline_index: int | None,
    ) -> None:
        session = self._session(consultation_id, participant_id)
        await session.add_candidate(candidate, sdp_mid, sdp_mline_index)

    async def close_session(self, consultation_id: str, participant_id: str) -> None:
        room = self.rooms.get(consultation_id)
        if room is None:
            return
        session = room.sessions.get(participant_id)
        last = self._final_sample(session) if session is not None else None
        await room.remove(participant_id)
        if session is not None:
            self._tally.close(session)
        if last is not None:
            self._events.quality(consultation_id, [last])
        # Another close may have emptied and dropped the room during the await above.
        if not room.sessions and self.rooms.get(consultation_id) is room:
            room.speaker.stop()
            if room.recording is not None:
                room.recording.stop("everyone_left")
                self._let_go(room.recording)
                room.recording = None
            del self.rooms[consultation_id]

    # ------------------------------------------------------------ pause / resume

    def pause_producers(
        self,
        consultation_id: str,
        participant_id: str,
        kind: Kind,
        paused: bool,
        source: Source | None = None,
    ) -> None:
        room = self.rooms.get(consultation_id)
        if room is not None:
            room.pause_producers(participant_id, kind, paused, source)

    # ------------------------------------------------------------ extra video Producers

    def publish_extra(self, consultation_id: str, participant_id: str, source: ExtraSource) -> None:
        self._session(consultation_id, participant_id).publish_extra(source)

    def unpublish_extra(
        self, consultation_id: str, participant_id: str, source: ExtraSource
    ) -> None:
        session = self.session(consultation_id, participant_id)
        if session is not None:
            session.unpublish_extra(source)

    def pause_consumers(
        self, consultation_id: str, subscriber_id: str, kind: Kind, paused: bool
    ) -> None:
        room = self.rooms.get(consultation_id)
        if room is not None:
            room.pause_consumers(subscriber_id, kind, paused)

    def follow_speaker(self, consultation_id: str, subscriber_id: str, follow: bool) -> None:
        room = self.rooms.get(consultation_id)
        if room is not None:
            room.follow_speaker(subscriber_id, follow)

    # ------------------------------------------------------------ recording

    def start_recording(
        self,
        consultation_id: str,
        recording_id: str,
        roles: dict[str, str],
        consents: dict[str, bool],
        *,
        resume: bool = False,
    ) -> None:
        room = self.rooms.get(consultation_id)
        if self._recordings is None:
            raise MediaError("recording_failed", "this Worker cannot record")
        if room is None:
            raise MediaError("unexpected", "nothing to record: no media in this consultation")
        if room.recording is not None:
            raise MediaError("unexpected", "this consultation is being recorded already")

        def on_event(event: dict[str, Any]) -> None:
            kind, reason = event.get("type"), event.get("reason")
            if kind == "start_failed" and reason == "failed":
                self._recording_failures["start_failed"] += 1
            elif kind == "recording_stopped" and reason in self._recording_failures:
                self._recording_failures[str(reason)] += 1
            if kind in ("recording_stopped", "start_failed"):
                # It has stopped by itself (a full disk, a failed start): let it go.
                if room.recording is recording:
                    room.detach(recording)
                    self._let_go(recording)
                    room.recording = None
            self._events.recording_event(consultation_id, event)

        recording = self._recordings(consultation_id, recording_id, on_event, room.request_keyframe)
        room.recording = recording
        # Started first so that it knows everyone's role when the room's Producers are
        # registered with it; those begin at once, with the consent given.
        recording.start(roles, consents, resume=resume)
        room.attach(recording)

    def recording_consent(
        self, consultation_id: str, participant_id: str, granted: bool, role: str | None
    ) -> None:
        room = self.rooms.get(consultation_id)
        if room is not None and room.recording is not None:
            room.recording.consent(participant_id, granted, role)

    def stop_recording(self, consultation_id: str, reason: str) -> None:
        room = self.rooms.get(consultation_id)
        if room is not None and room.recording is not None:
            recording, room.recording = room.recording, None
            room.detach(recording)
            recording.stop(reason)
            self._let_go(recording)

    def _let_go(self, recording: RoomRecording) -> None:
        """A recording the Worker no longer feeds: its counts join the totals."""
        self._recorded_bytes += recording.recorded_bytes
        self._recording_dropped_frames += recording.dropped_frames

    # ------------------------------------------------------------ measuring

    def start_measuring(self) -> None:
        """The loop-lag timer and the quality samples (idempotent; on the running loop)."""
        self.loop_lag.start()
        if self._measuring is None or self._measuring.done():
            self._measuring = asyncio.get_running_loop().create_task(
                self._measure(), name="worker-quality"
            )

    async def _measure(self) -> None:
        while True:
            await asyncio.sleep(self.config.quality_interval_s)
            for room in list(self.rooms.values()):
                samples = []
                for session in list(room.sessions.values()):
                    if session.connection_state != "connected":
                        continue
                    sample = self._sample(session)
                    if sample is not None:
                        samples.append(sample)
                if samples:
                    try:
                        self._events.quality(room.consultation_id, samples)
                    except Exception:
                        log.exception("handing over quality samples failed")

    def _sample(self, session: PeerSession, *, final: bool = False) -> QualitySample | None:
        try:
            sample = self._sampler.sample(session, final=final)
        except Exception:
            # A meter must never take the Worker down; say it once, not every few seconds.
            if not self._measure_failed:
                self._measure_failed = True
                log.exception("measuring %r failed", session)
            return None
        if sample is not None and sample.rtt_ms is not None:
            self._round_trips.observe(sample.rtt_ms / 1000)
        return sample

    def _final_sample(self, session: PeerSession) -> QualitySample | None:
        if session.connection_state != "connected":
            return None
        return self._sample(session, final=True)

    def metrics(self, worker_id: str) -> WorkerMetrics:
        """This Worker's numbers, read now (``/metrics``): counting only, no I/O."""
        self.start_measuring()
        sessions = [s for room in self.rooms.values() for s in room.sessions.values()]
        producers: dict[str, int] = {"audio": 0, "video": 0}
        consumers: dict[str, int] = {"audio": 0, "video": 0}
        for room in self.rooms.values():
            for producer in room.producers.values():
                producers[producer.kind] = producers.get(producer.kind, 0) + 1
        for session in sessions:
            for consumer in session.consumers.values():
                kind = consumer.producer.kind
                consumers[kind] = consumers.get(kind, 0) + 1
        recordings = [r.recording for r in self.rooms.values() if r.recording is not None]
        try:
            flows = self._tally.flows(sessions)
        except Exception:
            if not self._measure_failed:
                self._measure_failed = True
                log.exception("reading the Worker's counters failed")
            flows = ()
        return WorkerMetrics(
            worker=worker_id,
            rooms=len(self.rooms),
            sessions=len(sessions),
            producers=producers,
            consumers=consumers,
            flows=flows,
            round_trip=self._round_trips.snapshot(),
            loop_lag=self.loop_lag.snapshot(),
            recordings=len(recordings),
            recording_bytes=self._recorded_bytes + sum(r.recorded_bytes for r in recordings),
            recording_dropped_frames=self._recording_dropped_frames
            + sum(r.dropped_frames for r in recordings),
            recording_failures=dict(self._recording_failures),
        )

    # ------------------------------------------------------------ the rest

    async def close(self) -> None:
        self.loop_lag.stop()
        if self._measuring is not None:
            self._measuring.cancel()
        if self._bandwidth is not None:
            self._bandwidth.cancel()
        for consultation_id, room in list(self.rooms.items()):
            for participant_id in list(room.sessions):
                await self.close_session(consultation_id, participant_id)

    def stats(self) -> WorkerStats:
        sessions = [s for room in self.rooms.values() for s in room.sessions.values()]
        consumers = [c for s in sessions for c in s.consumers.values()]
        producers = [p for room in self.rooms.values() for p in room.producers.values()]
        return WorkerStats(
            rooms=len(self.rooms),
            sessions=len(sessions),
            producers=len(producers),
            consumers=len(consumers),
            paused_producers=sum(p.paused for p in producers),
            paused_consumers=sum(c.paused for c in consumers),
        )
