"""Consent-gated recording of a consultation: the protocol side of recordings.Recorder.

A participant with the ``record`` permission asks; asking counts as their own consent.
Everyone else present who publishes gets a ``consent_request`` (observers send nothing, so
nothing of theirs is recorded and they are not asked); the recording starts only when all have
agreed, and one refusal cancels the request. A late joiner is asked on arrival and left out
of the recording (the Recorder lists them as excluded) until they agree; withdrawing stops
their tracks. Every consent answer and every start and stop goes to the audit log.

A ``ConsultationRecording`` is a media RoomSink: attached to the consultation's MediaRoom,
it registers each Producer with the Recorder and hands it every encoded frame.
"""

from __future__ import annotations

import logging
import time
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal

from media.producer import Producer
from recordings.errors import ConsentError, RecordingError
from recordings.recorder import Recorder
from recordings.store import RecordingStore
from rooms.consultation import Participant
from rooms.roles import Permission, can
from signaling import protocol as p

if TYPE_CHECKING:
    from signaling.server import Server

log = logging.getLogger(__name__)

State = Literal["idle", "pending", "recording", "stopped"]


class ConsultationRecording:
    def __init__(
        self, server: Server, store: RecordingStore, consultation_id: str, requested_by: str
    ) -> None:
        self.server = server
        self.consultation_id = consultation_id
        self.requested_by = requested_by
        self.recorder = Recorder(store, consultation_id, on_event=self._on_recorder_event)
        self.state: State = "pending"
        self.waiting_for: set[str] = set()
        self.reason: str | None = None
        self.by: str | None = None
        self.started_at: float | None = None
        self._roles: dict[str, str] = {}
        self._attached = False

    @property
    def recording_id(self) -> str:
        return self.recorder.recording

    # ------------------------------------------------------------ RoomSink

    def producer_opened(self, producer: Producer) -> None:
        kind = producer.kind
        codec = "audio/opus" if kind == "audio" else f"video/{self.server.config.media.video_codec}"
        self.recorder.add_track(
            producer.id,
            producer.participant_id,
            self._roles.get(producer.participant_id, ""),
            kind,
            codec,
            request_keyframe=producer.request_keyframe,
        )

    def producer_closed(self, producer: Producer) -> None:
        self.recorder.remove_track(producer.id)

    def frame(
        self, producer: Producer, data: bytes, pts: int, time_base: Fraction, keyframe: bool
    ) -> None:
        self.recorder.write(producer.id, data, pts, time_base, keyframe)

    # ------------------------------------------------------------ consent flow

    async def begin(self, present: list[Participant]) -> None:
        present = [x for x in present if can(x.role, Permission.publish)]
        self._roles = {x.id: str(x.role) for x in present}
        self._consent(self.requested_by, True)
        self.waiting_for = {x.id for x in present if x.id != self.requested_by}
        request = p.ConsentRequest(recordingId=self.recording_id, requestedBy=self.requested_by)
        for participant_id in self.waiting_for:
            client = self.server.hub.get(self.consultation_id, participant_id)
            if client is not None:
                client.post(request)
        self._maybe_start()
        if self.state == "pending":
            self.broadcast()

    def answer(self, participant: Participant, granted: bool) -> None:
        self._roles.setdefault(participant.id, str(participant.role))
        self._consent(participant.id, granted)
        if self.state == "pending":
            self.waiting_for.discard(participant.id)
            if not granted:
                requester = self.server.hub.get(self.consultation_id, self.requested_by)
                if requester is not None:
                    requester.post(
                        p.Error(
                            code="consent_refused",
                            message=f"participant {participant.id} declined recording",
                            ref="record",
                            participantId=participant.id,
                        )
                    )
                self._finish("idle", "declined", by=participant.id)
                return
            self._maybe_start()
        self.broadcast()

    def joined(self, participant: Participant) -> None:
        """A late joiner: ask them; until they agree they are left out."""
        client = self.server.hub.get(self.consultation_id, participant.id)
        if not can(participant.role, Permission.publish):
            if client is not None:
                client.post(self.describe())
            return
        self._roles[participant.id] = str(participant.role)
        if self.state == "pending":
            self.waiting_for.add(participant.id)
        # Everyone's waitingFor / excluded changes, the newcomer's view included.
        self.broadcast()
        if client is not None:
            client.post(
                p.ConsentRequest(recordingId=self.recording_id, requestedBy=self.requested_by)
            )

    def left(self, participant_id: str) -> None:
        if self.state == "pending":
            self.waiting_for.discard(participant_id)
            self._maybe_start()
            self.broadcast()

    def stop(self, reason: str = "stopped", by: str | None = None) -> None:
        if self.state == "recording":
            self.recorder.stop(reason)
        self._finish("stopped" if self.state == "recording" else "idle", reason, by=by)

    # ------------------------------------------------------------ internals

    def _consent(self, participant_id: str, granted: bool) -> None:
        self.recorder.consent(participant_id, granted, self._roles.get(participant_id))
        identity = self._identity(participant_id)
        self.server.audit.record(
            "recording_consent",
            consultation=self.consultation_id,
            recording=self.recording_id,
            participant=participant_id,
            identity=identity,
            granted=granted,
        )

    def _identity(self, participant_id: str) -> str | None:
        client = self.server.hub.get(self.consultation_id, participant_id)
        return client.participant.identity if client and client.participant else None

    def _maybe_start(self) -> None:
        if self.state != "pending" or self.waiting_for:
            return
        try:
            self.recorder.start(self._roles)
        except ConsentError as exc:
            self._finish("idle", "consent_required")
            log.warning("recording refused: %s", exc)
            return
        except (RecordingError, OSError) as exc:
            log.error("recording could not start: %s", exc)
            requester = self.server.hub.get(self.consultation_id, self.requested_by)
            if requester is not None:
                requester.post(
                    p.Error(code="recording_failed", message="the server could not start it")
                )
            self._finish("idle", "failed")
            return
        room = self.server.worker.room(self.consultation_id)
        if room is not None:
            room.attach(self)
            self._attached = True
        self.state = "recording"
        self.started_at = time.time()
        self.server.audit.record(
            "recording_started",
            consultation=self.consultation_id,
            recording=self.recording_id,
            requested_by=self.requested_by,
        )
        self.broadcast()

    def _finish(self, state: State, reason: str, by: str | None = None) -> None:
        room = self.server.worker.room(self.consultation_id)
        if self._attached and room is not None:
            room.detach(self)
        self._attached = False
        was_recording = self.state == "recording"
        self.state, self.reason, self.by = state, reason, by
        self.waiting_for.clear()
        if was_recording:
            self.server.audit.record(
                "recording_stopped",
                consultation=self.consultation_id,
                recording=self.recording_id,
                reason=reason,
            )
        self.broadcast()
        self.server.recordings.pop(self.consultation_id, None)

    def _on_recorder_event(self, event: dict[str, Any]) -> None:
        # A disk-full or write failure: the Recorder kept what it had; the call goes on.
        # (A stop we asked for is finished by stop() itself.)
        if (
            event.get("type") == "recording_stopped"
            and event.get("reason") in ("disk_full", "error")
            and self.state == "recording"
        ):
            reason = str(event.get("reason", "error"))
            self._finish("stopped", reason)

    def excluded(self) -> list[str]:
        if self.state != "recording":
            return []
        present = self.server.hub.participant_ids(self.consultation_id)
        return sorted(pid for pid in present if not self.recorder.has_consent(pid))

    def describe(self) -> p.RecordingState:
        return p.RecordingState(
            state=self.state,
            recordingId=self.recording_id,
            waitingFor=sorted(self.waiting_for),
            excluded=self.excluded(),
            reason=self.reason,
            by=self.by,
            startedAt=self.started_at,
        )

    def broadcast(self) -> None:
        self.server.hub.broadcast(self.consultation_id, self.describe())
