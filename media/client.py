"""The seam between signaling and media: ``WorkerClient`` drives a Worker, ``WorkerEvents``
is what comes back. Both speak ids and plain values only (consultation, participant,
producer), never a live aiortc object, because a process boundary will cut here: the
embedded default calls an in-process Worker (media/local.py), a deployment with several
Worker processes puts a bus behind the same interface (LiveKit's Router has a local and a
Redis implementation in the same way).

Offers come back as events (``offer``) rather than return values: the Worker decides when a
participant needs a new offer (someone published, someone left), not the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from media.config import VideoCodec

Kind = Literal["audio", "video"]
# What a Producer carries. Every participant's first audio is ``microphone`` and first video
# ``camera``; ``screen`` (getDisplayMedia) and ``camera2`` (a second camera: dermatoscope,
# wound close-up) are extra video Producers, added and removed while the session lives.
Source = Literal["microphone", "camera", "screen", "camera2"]
ExtraSource = Literal["screen", "camera2"]
EXTRA_SOURCES: tuple[ExtraSource, ...] = ("screen", "camera2")
# Extra video Producers one participant may have at once (a screen and a second camera).
MAX_EXTRA_PRODUCERS = 2


def main_source(kind: Kind) -> Source:
    return "camera" if kind == "video" else "microphone"


@dataclass(frozen=True)
class SlotDescription:
    """What one m-line of an offer carries, for the client to label what it receives."""

    mid: str
    kind: Kind
    role: Literal["publish", "consume", "idle"]
    participant_id: str | None = None
    producer_id: str | None = None
    # What the track is (publish and consume m-lines): a "publish" m-line of source
    # "screen" wants the screen track, not the camera.
    source: Source | None = None


@dataclass(frozen=True)
class ProducerInfo:
    producer_id: str
    participant_id: str
    kind: Kind
    source: Source = "camera"


@dataclass(frozen=True)
class WorkerStats:
    rooms: int
    sessions: int
    producers: int
    consumers: int
    paused_producers: int = 0
    paused_consumers: int = 0


Direction = Literal["inbound", "outbound"]


@dataclass(frozen=True)
class Histogram:
    """Observations counted by upper bound, as Prometheus carries them: ``counts[i]`` is how
    many were at most ``bounds[i]`` (cumulative); ``count`` is all of them (``+Inf``)."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    count: int = 0
    sum: float = 0.0


@dataclass(frozen=True)
class Flow:
    """What one Worker has carried in one direction of one kind since it started (counters).

    ``inbound`` is publishers to the Worker: ``packets_lost`` on the way in, ``nacks`` and
    ``plis`` the Worker sent the publishers. ``outbound`` is the Worker to subscribers:
    ``packets_lost`` as the subscribers' receiver reports say, ``nacks`` and ``plis`` (PLI and
    FIR) they sent. ``bytes`` are media payload bytes.
    """

    direction: Direction
    kind: Kind
    packets: int = 0
    bytes: int = 0
    packets_lost: int = 0
    nacks: int = 0
    plis: int = 0


@dataclass(frozen=True)
class WorkerMetrics:
    """One Worker's numbers for ``/metrics``: plain values, no consultation or participant
    (cardinality and privacy); counters only grow while the Worker lives."""

    worker: str
    rooms: int = 0
    sessions: int = 0
    producers: dict[str, int] = field(default_factory=dict)  # by kind
    consumers: dict[str, int] = field(default_factory=dict)  # by kind
    flows: tuple[Flow, ...] = ()
    round_trip: Histogram | None = None  # seconds, subscribers' receiver reports
    loop_lag: Histogram | None = None  # seconds a timer fired late on the Worker's loop
    recordings: int = 0  # running now
    recording_bytes: int = 0  # media bytes handed to recordings' writers
    recording_dropped_frames: int = 0  # the disk was behind
    recording_failures: dict[str, int] = field(default_factory=dict)  # by reason


@dataclass(frozen=True)
class QualitySample:
    """How one participant's media went over the last few seconds, as the Worker saw it.

    ``loss_in``: share of their packets lost on the way to the Worker; ``loss_out``: share of
    what the Worker sent them that their receiver reports say was lost; ``rtt_ms``: round
    trip from the Worker to them; ``fps_in``: video frames a second received from them;
    ``fps_out``: video frames a second sent to them, per video stream; ``kbps_in/out``: media
    bitrate. None where there was nothing to measure (no video, no report yet). Opaque ids
    and numbers only: this is kept with the consultation.
    """

    participant_id: str
    at: float  # Unix time at the end of the interval
    interval_s: float
    loss_in: float | None = None
    loss_out: float | None = None
    rtt_ms: float | None = None
    fps_in: float | None = None
    fps_out: float | None = None
    kbps_in: float | None = None
    kbps_out: float | None = None


class WorkerEvents(Protocol):
    """Called by the Worker (on the caller's loop for the local client)."""

    def offer(
        self, consultation_id: str, participant_id: str, sdp: str, slots: list[SlotDescription]
    ) -> None:
        """Send this offer to the participant; its answer comes back through ``answer``."""

    def producer_opened(self, consultation_id: str, producer: ProducerInfo) -> None: ...

    def producer_closed(self, consultation_id: str, producer: ProducerInfo) -> None: ...

    def session_failed(self, consultation_id: str, participant_id: str, reason: str) -> None:
        """The participant's media session is dead (no answer, ICE gone): end them."""

    def notice(self, consultation_id: str, participant_id: str, code: str, message: str) -> None:
        """Something the participant should be told that ends nothing (``video_unavailable``)."""

    def recording_event(self, consultation_id: str, event: dict[str, Any]) -> None:
        """From the Recorder: ``recording_started``, ``recording_stopped`` (with a reason),
        ``start_failed``."""

    def media_lost(self, consultation_id: str, reason: str) -> None:
        """The consultation's Worker is gone and it has been placed on another: every
        session of it must be opened again (a recording resumed)."""

    def quality(self, consultation_id: str, samples: list[QualitySample]) -> None:
        """Every few seconds, and when a session closes: how each session's media went."""


class WorkerClient(Protocol):
    """How signaling drives media. Every method may raise ``media.errors.MediaError``."""

    async def open_session(
        self,
        consultation_id: str,
        participant_id: str,
        *,
        publish: tuple[Kind, ...],
        subscribe: bool,
        video_codecs: frozenset[VideoCodec] | None = None,
    ) -> None:
        """A participant's media session; its first offer follows as an event.

        ``video_codecs``: what the participant can send and receive (None: all).
        """

    async def close_session(self, consultation_id: str, participant_id: str) -> None:
        """Idempotent; the consultation's media room goes with its last session."""

    async def answer(self, consultation_id: str, participant_id: str, sdp: str) -> None:
        """The answer to the outstanding offer; ``bad_sdp`` leaves the offer outstanding."""

    async def candidate(
        self,
        consultation_id: str,
        participant_id: str,
        candidate: str | None,
        sdp_mid: str | None,
        sdp_mline_index: int | None,
    ) -> None: ...

    async def pause_producers(
        self,
        consultation_id: str,
        participant_id: str,
        kind: Kind,
        paused: bool,
        source: Source | None = None,
    ) -> None:
        """Stop (or resume) forwarding and recording what the participant publishes of
        ``kind`` (mediasoup's Producer.pause): a mute the client cannot override.
        ``source``: which of their Producers; None is the main one of ``kind`` (camera,
        microphone), so turning the camera off leaves a screen share running."""

    async def pause_consumers(
        self, consultation_id: str, subscriber_id: str, kind: Kind, paused: bool
    ) -> None:
        """Stop (or resume) sending the subscriber anything of ``kind`` (Consumer.pause)."""

    async def publish_extra(
        self, consultation_id: str, participant_id: str, source: ExtraSource
    ) -> None:
        """Add a receiving video m-line of ``source`` to the participant's session (a new
        offer follows); its Producer opens when their track arrives, and reaches every
        subscriber like any other. ``too_many_producers`` past MAX_EXTRA_PRODUCERS,
        ``unexpected`` if that source is published already or they cannot send video."""

    async def unpublish_extra(
        self, consultation_id: str, participant_id: str, source: ExtraSource
    ) -> None:
        """Close the participant's Producer of ``source`` (idempotent); its m-line is kept
        idle and reused by the next extra Producer."""

    async def follow_speaker(self, consultation_id: str, subscriber_id: str, follow: bool) -> None:
        """Send the subscriber only the active speaker's video (the Worker tells who it is
        from the Opus packets' sizes), or everyone's again. Whose video it is comes back as
        a ``video_speaker`` notice (its message the participant id, empty for nobody)."""

    async def start_recording(
        self,
        consultation_id: str,
        recording_id: str,
        roles: dict[str, str],
        consents: dict[str, bool],
        *,
        resume: bool = False,
    ) -> None:
        """Record the room: ``roles`` of those present, ``consents`` given so far. The
        Recorder enforces consent a second time; its events come as ``recording_event``.
        ``resume``: the recording exists already (its Worker died): go on in new segments
        and let the manifest show the gap."""

    async def recording_consent(
        self, consultation_id: str, participant_id: str, granted: bool, role: str | None
    ) -> None: ...

    async def stop_recording(self, consultation_id: str, reason: str) -> None: ...

    async def stats(self) -> WorkerStats: ...

    async def metrics(self) -> list[WorkerMetrics]:
        """One entry per live Worker, each asked now (``/metrics``)."""
        ...

    async def close(self) -> None: ...
