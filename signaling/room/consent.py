"""Consent-gated recording of a consultation: the Room's side of it.

A participant with the ``record`` permission asks; asking counts as their own consent.
Everyone else present who publishes gets a ``consent_request`` (observers send nothing, so
nothing of theirs is recorded and they are not asked); the recording starts only when all have
agreed, and one refusal cancels the request. A late joiner is asked on arrival and left out
of the recording (the Recorder lists them as excluded) until they agree; withdrawing stops
their tracks. Every consent answer and every start and stop goes to the audit log.

Only those asked may answer a pending request (``forbidden`` otherwise: an observer must
not be able to cancel it for everyone); while recording, any publisher may withdraw and
agree again. Consent changes are rate-limited per participant (``rate_limited``): each one
closes or opens files, and a real person changes their mind a few times in a call.

Consent lives here, in signaling; the Recorder lives with the media Worker, which is told
to start, stop and of each answer by participant id (media.client.WorkerClient), and
enforces consent a second time itself.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Literal

from media.errors import MediaError
from recordings.store import new_recording_id
from rooms.roles import Permission, can
from signaling import events as ev
from signaling import protocol as p
from signaling.room.limits import TokenBucket

if TYPE_CHECKING:
    from signaling.room.members import Member
    from signaling.room.room import Room

log = logging.getLogger(__name__)

State = Literal["idle", "pending", "recording", "stopped"]

# Consent changes per participant: a burst of 4 (answer, withdraw, agree again, ...), then
# one more every 15 s. Each change opens or closes files; a person needs only a few.
CONSENT_BURST = 4
CONSENT_REFILL_S = 15.0


class RecordingConsent:
    def __init__(self, room: Room, *, requested_by: Member) -> None:
        self.room = room
        self.requested_by = requested_by.id
        self.recording_id = new_recording_id()
        self.state: State = "pending"
        # Who was asked (answering is theirs alone while pending), and who has not answered.
        self.asked: set[str] = set()
        self.waiting_for: set[str] = set()
        self.reason: str | None = None
        self.by: str | None = None
        self.started_at: float | None = None
        # Publishers' roles, and every consent answer so far (the Recorder has its own).
        self._roles: dict[str, str] = {}
        self._consents: dict[str, bool] = {}
        # Per identity, so reconnecting (a new participant id) does not refill the bucket.
        self._consent_buckets: dict[str, TokenBucket] = {}
        self._identities = {requested_by.id: requested_by.grant.identity}

    @property
    def _cid(self) -> str:
        return self.room.consultation_id

    # ------------------------------------------------------------ consent flow

    async def begin(self) -> None:
        present = [m for m in self.room.members.values() if can(m.grant.role, Permission.publish)]
        self._roles = {m.id: str(m.grant.role) for m in present}
        self._identities.update({m.id: m.grant.identity for m in present})
        self._consent(self.requested_by, True)
        self.waiting_for = {m.id for m in present if m.id != self.requested_by}
        self.asked = set(self.waiting_for)
        request = p.ConsentRequest(recordingId=self.recording_id, requestedBy=self.requested_by)
        for participant_id in self.waiting_for:
            self.room.post(participant_id, request)
        await self._maybe_start()
        if self.state == "pending":
            self.broadcast()

    async def answer(self, member: Member, granted: bool) -> None:
        """A ``consent`` message. Raises ProtocolError (``forbidden``, ``rate_limited``) for
        one that may not change anything; it then changes nothing."""
        role = member.grant.role
        if self.state == "pending" and member.id not in self.asked:
            raise p.ProtocolError(
                "forbidden", "only participants asked for consent may answer", "consent"
            )
        if self.state == "recording" and not can(role, Permission.publish):
            raise p.ProtocolError("forbidden", f"role {role} is not recorded", "consent")
        bucket = self._consent_buckets.setdefault(
            member.grant.identity, TokenBucket(1 / CONSENT_REFILL_S, CONSENT_BURST)
        )
        if not bucket.take():
            raise p.ProtocolError(
                "rate_limited", "consent changed too often; try again in a while", "consent"
            )
        self._roles.setdefault(member.id, str(role))
        self._identities[member.id] = member.grant.identity
        self._consent(member.id, granted)
        if self.state == "recording":
            await self.room.worker.recording_consent(
                self._cid, member.id, granted, self._roles.get(member.id)
            )
        if self.state == "pending":
            self.waiting_for.discard(member.id)
            if not granted:
                self.room.post(
                    self.requested_by,
                    p.Error(
                        code="consent_refused",
                        message=f"participant {member.id} declined recording",
                        ref="record",
                        participantId=member.id,
                    ),
                )
                self._finish("idle", "declined", by=member.id)
                return
            await self._maybe_start()
        self.broadcast()

    async def joined(self, member: Member) -> None:
        """A late joiner: ask them; until they agree they are left out."""
        if not can(member.grant.role, Permission.publish):
            member.link.post(self.describe())
            return
        self._roles[member.id] = str(member.grant.role)
        self._identities[member.id] = member.grant.identity
        if self.state == "pending":
            self.waiting_for.add(member.id)
            self.asked.add(member.id)
        # Everyone's waitingFor / excluded changes, the newcomer's view included.
        self.broadcast()
        member.link.post(
            p.ConsentRequest(recordingId=self.recording_id, requestedBy=self.requested_by)
        )

    async def left(self, participant_id: str) -> None:
        if self.state == "pending":
            self.asked.discard(participant_id)
            self.waiting_for.discard(participant_id)
            await self._maybe_start()
            self.broadcast()

    async def resume(self) -> None:
        """On a new Worker after the old one died: the same recording goes on."""
        if self.state != "recording":
            return
        present = set(self.room.members)
        roles = {pid: r for pid, r in self._roles.items() if pid in present}
        consents = {pid: g for pid, g in self._consents.items() if pid in present}
        try:
            await self.room.worker.start_recording(
                self._cid, self.recording_id, roles, consents, resume=True
            )
        except MediaError as exc:
            log.error("recording %s could not resume: %s", self.recording_id, exc.message)
            self._finish("stopped", "error")
            return
        self.room.audit.record(
            "recording_resumed", consultation=self._cid, recording=self.recording_id
        )

    def stop(self, reason: str = "stopped", by: str | None = None) -> None:
        self._finish("stopped" if self.state == "recording" else "idle", reason, by=by)

    # ------------------------------------------------------------ internals

    def _consent(self, participant_id: str, granted: bool) -> None:
        self._consents[participant_id] = granted
        self.room.audit.record(
            "recording_consent",
            consultation=self._cid,
            recording=self.recording_id,
            participant=participant_id,
            identity=self._identities.get(participant_id),
            granted=granted,
        )

    async def _maybe_start(self) -> None:
        if self.state != "pending" or self.waiting_for:
            return
        # Those present now: someone asked who left without answering is not a party.
        present = set(self.room.members)
        roles = {pid: r for pid, r in self._roles.items() if pid in present}
        consents = {pid: g for pid, g in self._consents.items() if pid in present}
        try:
            # The Worker's writer thread creates the directory and the key: REC shows at
            # once, and a start that fails there comes back as start_failed.
            await self.room.worker.start_recording(self._cid, self.recording_id, roles, consents)
        except MediaError as exc:
            log.error("recording %s could not start: %s", self.recording_id, exc.message)
            self._failed_to_start("failed")
            return
        self.state = "recording"
        self.started_at = time.time()
        self.room.audit.record(
            "recording_started",
            consultation=self._cid,
            recording=self.recording_id,
            requested_by=self.requested_by,
        )
        self.room.events.publish(
            ev.RecordingStarted(
                consultation=self._cid, recording=self.recording_id, requested_by=self.requested_by
            )
        )
        self.broadcast()

    def _failed_to_start(self, reason: str) -> None:
        if reason == "failed":
            self.room.post(
                self.requested_by,
                p.Error(code="recording_failed", message="the server could not start it"),
            )
        self._finish("idle", reason)

    def _finish(self, state: State, reason: str, by: str | None = None) -> None:
        was_recording = self.state == "recording"
        if was_recording:
            # The Recorder writes what is queued, then closes its files; the call goes on.
            self.room.spawn(
                self.room.worker.stop_recording(self._cid, reason), "stopping the recording"
            )
        self.state, self.reason, self.by = state, reason, by
        self.waiting_for.clear()
        if was_recording:
            self.room.audit.record(
                "recording_stopped",
                consultation=self._cid,
                recording=self.recording_id,
                reason=reason,
            )
            self.room.events.publish(
                ev.RecordingStopped(
                    consultation=self._cid, recording=self.recording_id, reason=reason
                )
            )
        self.broadcast()
        if self.room.recording is self:
            self.room.recording = None

    def on_recorder_event(self, event: dict[str, Any]) -> None:
        """From the Worker's Recorder. A stop we asked for is finished already."""
        if event.get("recording") not in (None, self.recording_id):
            return
        kind = event.get("type")
        if kind == "start_failed" and self.state == "recording":
            self._failed_to_start(str(event.get("reason", "failed")))
        elif (
            kind == "recording_stopped"
            and event.get("reason") in ("disk_full", "error")
            and self.state == "recording"
        ):
            # A full disk or a write failure: the Recorder kept what it had; the call goes on.
            self._finish("stopped", str(event.get("reason", "error")))

    def excluded(self) -> list[str]:
        """Publishers present whose tracks are left out (observers have none to leave out)."""
        if self.state != "recording":
            return []
        return sorted(
            pid
            for pid in self.room.members
            if pid in self._roles and not self._consents.get(pid, False)
        )

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
        self.room.broadcast(self.describe())
