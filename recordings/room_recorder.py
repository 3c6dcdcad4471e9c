"""A MediaRoom's recording: the RoomSink the media Worker feeds, over a RecorderThread.

The Worker owns it (media.worker.RoomRecording): it registers each Producer of the room and
hands over every encoded frame; the consent answers come from signaling through the Worker
by participant id. Everything is queued for the recording's writer thread, so nothing here
touches the disk; what the Recorder reports comes back through ``on_event``, except its
requests for keyframes, which are the Worker's business (``request_keyframe``).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

from media.producer import Producer
from recordings.store import RecordingStore
from recordings.writer_thread import RecorderThread

EventCallback = Callable[[dict[str, Any]], None]


class RoomRecorder:
    def __init__(
        self,
        store: RecordingStore,
        consultation_id: str,
        recording_id: str,
        *,
        on_event: EventCallback,
        request_keyframe: Callable[[str], None],
    ) -> None:
        self.recording_id = recording_id
        self._on_event = on_event
        self._request_keyframe = request_keyframe
        self._roles: dict[str, str] = {}
        # Media bytes accepted for writing (the Worker's metrics).
        self.recorded_bytes = 0
        self.thread = RecorderThread(
            store, consultation_id, on_event=self._event, recording=recording_id
        )

    @classmethod
    def factory(cls, store: RecordingStore) -> Callable[..., RoomRecorder]:
        """What the Worker is given to make one per recording (media.worker.RecordingFactory)."""

        def make(
            consultation_id: str,
            recording_id: str,
            on_event: EventCallback,
            request_keyframe: Callable[[str], None],
        ) -> RoomRecorder:
            return cls(
                store,
                consultation_id,
                recording_id,
                on_event=on_event,
                request_keyframe=request_keyframe,
            )

        return make

    def _event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "keyframe_needed":
            self._request_keyframe(str(event.get("producer")))
        else:
            self._on_event(event)

    # ------------------------------------------------------------ steering

    def start(
        self, roles: dict[str, str], consents: dict[str, bool], *, resume: bool = False
    ) -> None:
        self._roles.update(roles)
        for participant_id, granted in consents.items():
            self.thread.consent(participant_id, granted, roles.get(participant_id))
        self.thread.start(roles, resume=resume)

    def consent(self, participant_id: str, granted: bool, role: str | None) -> None:
        if role:
            self._roles[participant_id] = role
        self.thread.consent(participant_id, granted, role)

    def stop(self, reason: str) -> None:
        self.thread.stop(reason)

    # ------------------------------------------------------------ RoomSink

    def producer_opened(self, producer: Producer) -> None:
        self.thread.add_track(
            producer.id,
            producer.participant_id,
            self._roles.get(producer.participant_id, ""),
            producer.kind,
            producer.mime_type,
        )

    def producer_closed(self, producer: Producer) -> None:
        self.thread.remove_track(producer.id)

    def frame(
        self, producer: Producer, data: bytes, pts: int, time_base: Fraction, keyframe: bool
    ) -> None:
        if self.thread.write(producer.id, data, pts, time_base, keyframe):
            self.recorded_bytes += len(data)

    @property
    def dropped_frames(self) -> int:
        """Frames dropped because the disk was behind (the Worker's metrics)."""
        return self.thread.dropped
