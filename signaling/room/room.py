"""A Room: the one owner of a consultation's live state on the signaling side.

Who is in the call and how to reach them, the recording's consent state, and the rules for
every message a participant sends once joined. It drives media only through a
``WorkerClient`` (by ids) and hears back through ``Rooms``, which routes the Worker's events
here. A participant's socket (``ClientConnection``) is transport only: it authenticates,
then hands each message to ``handle``.

Seats (the participant cap, the same identity reconnecting, an ended consultation) are the
RoomStore's: that is the part several signaling nodes must agree on.

The waiting room is enforced here. Someone who must wait (patients and observers unless
their token pre-admits them) gets ``waiting`` and nothing else: no seat, no media session
(so no media can reach them), no names of the others; of what they send only ``ping`` and
``leave`` are taken. Those who may admit see who waits (``waiting_room``) and admit, admit
all, or send someone away with a note; each step is audited.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from media.client import Kind, ProducerInfo, SlotDescription, WorkerClient
from media.config import MediaConfig, VideoCodec
from media.turn import ice_servers_for
from rooms.consultation import ConsultationKind, Participant, new_participant_id
from rooms.errors import RoomError, WaitingRoomFull
from rooms.records.revocations import Scope
from rooms.roles import PERMISSIONS, Permission, Role, can
from rooms.store import RoomStore
from signaling import events as ev
from signaling import protocol as p
from signaling.audit.log import AuditLog
from signaling.room.agenda import Agenda
from signaling.room.camera import FarCamera
from signaling.room.chat import RoomChat
from signaling.room.consent import RecordingConsent
from signaling.room.extra_video import ExtraVideo
from signaling.room.floor import Floor, holds
from signaling.room.incoming_video import IncomingVideo
from signaling.room.limits import TokenBucket
from signaling.room.members import (
    WAITING_ROOM_CAP,
    HeldLink,
    Member,
    ParticipantLink,
)
from signaling.room.showing import RoomImages
from signaling.sharing.store import Keeping, Sharing
from signaling.tokens import Grant

if TYPE_CHECKING:
    from signaling.room.revocation import RevocationGuard

log = logging.getLogger(__name__)


# Roles of the participants a Room has seated, for the Workers' quality samples, which may
# arrive just after someone left: the newest this many.
ROLES_KEPT = 256
# How many times in a row the server gives someone new media after theirs failed (1, 2, 4,
# 8, 16 s apart: about half a minute of a blocked network) before it ends their session.
MEDIA_RECOVERIES = 5
RECOVERY_FORGOTTEN_S = 120.0


class Room:
    def __init__(
        self,
        consultation_id: str,
        *,
        store: RoomStore,
        worker: WorkerClient,
        audit: AuditLog,
        revocation: RevocationGuard,
        media: MediaConfig,
        on_empty: Callable[[Room], None] | None = None,
        resume_grace_s: float = 20.0,
        events: ev.EventStream,
        on_joined: Callable[[float], None] | None = None,
        sharing: Sharing | None = None,
    ) -> None:
        """``on_joined``: told each participant's join time, in seconds, once; ``sharing``:
        where chat and shared images are kept (None: in this Room's memory only)."""
        self.consultation_id = consultation_id
        self.members: dict[str, Member] = {}
        # The waiting room, in order of arrival.
        self.waiting: dict[str, Member] = {}
        self.recording: RecordingConsent | None = None
        self.store = store
        self.worker = worker
        self.audit = audit
        self.revocation = revocation
        self.events = events
        self._media = media
        self._on_joined = on_joined
        # Participant id -> call role of everyone seated here (the newest ROLES_KEPT).
        self.roles: dict[str, str] = {}
        # Joins under way: the Room must not be dropped while one is awaiting its seat.
        self.joining = 0
        self._on_empty = on_empty
        # How long a session whose socket dropped is held for the same client to come back
        # (`join` with `resume`): a network switch, a tunnel, a phone locking its screen.
        self._resume_grace_s = resume_grace_s
        # Sessions whose socket dropped, held for a resume until these fire.
        self._held: dict[str, asyncio.TimerHandle] = {}
        self._restarts: dict[str, TokenBucket] = {}
        # New media sessions the server made for someone whose media kept failing.
        self._recoveries: dict[str, tuple[int, float]] = {}
        # Worker calls made from event handlers, which cannot await them: kept so they are
        # neither collected mid-flight nor left with an unretrieved exception.
        self._tasks: set[asyncio.Task[Any]] = set()
        keeping = Keeping(sharing, consultation_id)
        self.chat = RoomChat(self, keeping)
        self.images = RoomImages(self, keeping)
        self.incoming_video = IncomingVideo(self)
        self.floor = Floor(self)
        self.agenda = Agenda(self, keeping)
        self.camera = FarCamera(self)
        self.extra_video = ExtraVideo(self)

    def __repr__(self) -> str:
        return f"Room({self.consultation_id}, members={len(self.members)})"

    @property
    def empty(self) -> bool:
        return not self.members and not self.waiting and not self.joining

    def everyone(self) -> list[Member]:
        """In the call and in the waiting room (what a revocation must reach)."""
        return [*self.members.values(), *self.waiting.values()]

    # ------------------------------------------------------------ reaching people

    def post(self, participant_id: str, message: p._Message) -> None:
        member = self.members.get(participant_id)
        if member is not None:
            member.link.post(message)

    def broadcast(self, message: p._Message, *, exclude: str | None = None) -> None:
        for participant_id, member in list(self.members.items()):
            if participant_id != exclude:
                member.link.post(message)

    def spawn(self, coro: Any, what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(task: asyncio.Task[Any]) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.warning("%r: %s failed: %s", self, what, task.exception())

        task.add_done_callback(done)

    # ------------------------------------------------------------ joining and leaving

    async def join(
        self,
        link: ParticipantLink,
        grant: Grant,
        *,
        publish: tuple[Kind, ...],
        video_codecs: frozenset[VideoCodec] | None,
        received_at: float | None = None,
    ) -> Member:
        """Arrive: into the call, or into the waiting room. Raises RoomError (no seat, or
        the waiting room is full). ``received_at``: when the join message arrived
        (``time.monotonic()``), where the join time starts."""
        now = time.time()
        participant = Participant(
            id=new_participant_id(),
            identity=grant.identity,
            name=grant.name,
            role=grant.role,
            joined_at=now,
            # A remote expert in a ward round starts held (floor.py): shown muted at once.
            audio_muted=holds(grant),
        )
        member = Member(
            participant,
            grant,
            link,
            publish,
            video_codecs,
            arrived_at=now,
            join_started=time.monotonic() if received_at is None else received_at,
        )
        if grant.waits:
            self._wait(member)
        else:
            await self._seat(member)
        return member

    def _wait(self, member: Member) -> None:
        earlier = next(
            (m for m in self.waiting.values() if m.grant.identity == member.grant.identity), None
        )
        if earlier is not None:
            # The same person again (a reload): the newer socket keeps their place in line.
            del self.waiting[earlier.id]
            earlier.link.end("replaced by a newer connection of the same participant")
        elif len(self.waiting) >= WAITING_ROOM_CAP:
            raise WaitingRoomFull("the waiting room is full; please try again later")
        self.waiting[member.id] = member
        if self.revocation.revoked_since_check(member.grant):
            member.link.end("removed")
        self.audit.record(
            "waiting",
            consultation=self.consultation_id,
            participant=member.id,
            identity=member.grant.identity,
            role=str(member.grant.role),
        )
        log.info("participant %s waits in consultation %s", member.id, self.consultation_id)
        self._announce_waiting()

    def _announce_waiting(self) -> None:
        """Each waiter their place; those who may admit the list."""
        total = len(self.waiting)
        for position, waiter in enumerate(self.waiting.values(), start=1):
            waiter.link.post(
                p.Waiting(position=position, total=total, resumeToken=waiter.resume_token)
            )
        listing = self._waiting_room()
        for member in self.members.values():
            if can(member.grant.role, Permission.admit):
                member.link.post(listing)

    def _waiting_room(self) -> p.WaitingRoom:
        return p.WaitingRoom(
            waiting=[
                p.WaitingInfo(
                    id=m.id, name=m.participant.name, role=m.grant.role, since=m.arrived_at
                )
                for m in self.waiting.values()
            ]
        )

    async def _seat(self, member: Member) -> None:
        """Into the call: a seat, everyone told, a media session opened."""
        participant, grant, link = member.participant, member.grant, member.link
        self.joining += 1
        try:
            _, replaced = await self.store.join(
                self.consultation_id, ConsultationKind(grant.kind), participant
            )
        finally:
            self.joining -= 1
        if replaced is not None:
            old = self.members.get(replaced.id)
            if old is not None:
                # The store has dropped it already; its own leave() is then a no-op there.
                old.link.end("replaced by a newer connection of the same participant")
        log.info(
            "participant %s joined consultation %s as %s",
            participant.id,
            self.consultation_id,
            grant.role,
        )
        others = [
            _info(x)
            for x in await self.store.participants(self.consultation_id)
            if x.id != participant.id
        ]
        link.post(
            p.Joined(
                participant=_info(participant),
                consultation=p.ConsultationInfo(id=self.consultation_id, kind=grant.kind),
                participants=others,
                iceServers=[
                    p.IceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                    for s in ice_servers_for(
                        self._media, participant.id, client=True, relay=self._relay(grant.role)
                    )
                ],
                permissions=sorted(PERMISSIONS[grant.role]),
                resumeToken=member.resume_token,
            )
        )
        member.join_setup_s = time.monotonic() - member.join_started
        member.admitted = True
        self.members[participant.id] = member
        self.roles[participant.id] = str(grant.role)
        while len(self.roles) > ROLES_KEPT:
            del self.roles[next(iter(self.roles))]
        if self.revocation.revoked_since_check(grant):
            # Revoked between the token check and reaching the Room, where revocations look:
            # the end of its link takes the seat back; nobody hears of it, no media opens.
            link.end("removed")
            return
        self.broadcast(p.ParticipantJoined(participant=_info(participant)), exclude=participant.id)
        self.audit.record(
            "join",
            consultation=self.consultation_id,
            participant=participant.id,
            identity=grant.identity,
            role=str(grant.role),
        )
        if len(self.members) == 1:
            self.events.publish(ev.ConsultationStarted(consultation=self.consultation_id))
        self.events.publish(
            ev.ParticipantJoined(consultation=self.consultation_id, **ev.who(participant.id, grant))
        )
        if self.waiting and can(grant.role, Permission.admit):
            link.post(self._waiting_room())
        if self.recording is not None:
            await self.recording.joined(member)
        await self.worker.open_session(
            self.consultation_id,
            participant.id,
            publish=member.publish,
            subscribe=can(grant.role, Permission.subscribe),
            video_codecs=member.video_codecs,
        )
        if self.members.get(participant.id) is not member:
            # It left (or was removed) while its media session was being opened: the leave
            # closed nothing, so close what just opened.
            await self.worker.close_session(self.consultation_id, participant.id)
            return
        await self.floor.joined(member)
        await self.agenda.joined(member)
        self.images.joined(member)
        await self.chat.joined(member)

    async def leave(self, participant_id: str) -> None:
        """Everything the participant held goes: seat, media, consent. Once per member."""
        held = self._held.pop(participant_id, None)
        if held is not None:
            held.cancel()
        self._restarts.pop(participant_id, None)
        self._recoveries.pop(participant_id, None)
        if self.waiting.pop(participant_id, None) is not None:
            self.audit.record(
                "left_waiting_room", consultation=self.consultation_id, participant=participant_id
            )
            self._announce_waiting()
            return
        member = self.members.pop(participant_id, None)
        if member is None:
            return
        await self.worker.close_session(self.consultation_id, participant_id)
        await self.store.leave(self.consultation_id, participant_id)
        self.broadcast(p.ParticipantLeft(participantId=participant_id))
        self.images.left(participant_id)
        self.incoming_video.left(participant_id)
        self.floor.left(participant_id)
        self.camera.left(participant_id)
        self.extra_video.left(participant_id)
        if self.recording is not None:
            if self.members:
                await self.recording.left(participant_id)
            else:
                self.recording.stop("everyone_left")
        self.audit.record("leave", consultation=self.consultation_id, participant=participant_id)
        self.events.publish(
            ev.ParticipantLeft(
                consultation=self.consultation_id, **ev.who(participant_id, member.grant)
            )
        )
        if not self.members:
            # The round is over here: the bed it was at gets its summary.
            self.agenda.file_visit()
            self.events.publish(
                ev.ConsultationEnded(
                    consultation=self.consultation_id,
                    reason="ended"
                    if self.revocation.ended(self.consultation_id)
                    else "everyone_left",
                )
            )
        log.info("participant %s left consultation %s", participant_id, self.consultation_id)

    # ------------------------------------------------------------ a dropped socket

    def detach(self, member: Member) -> None:
        """The socket dropped without a goodbye: hold the session (media untouched, messages
        kept) for the same client to resume; after the grace period it is let go."""
        if member.id not in self.members and member.id not in self.waiting:
            return
        member.link = HeldLink()
        log.info("participant %s: socket lost, session held", member.id)
        loop = asyncio.get_running_loop()
        self._held[member.id] = loop.call_later(
            self._resume_grace_s,
            lambda: self.spawn(self._let_go(member.id), "letting a session go"),
        )

    async def _let_go(self, participant_id: str) -> None:
        self._held.pop(participant_id, None)
        await self.leave(participant_id)
        if self.empty and self._on_empty is not None:
            self._on_empty(self)

    def resume(self, link: ParticipantLink, grant: Grant, token: str) -> Member | None:
        """The same client back on a new socket: the held session goes on, what it missed
        delivered in order. None if there is nothing (left) to resume."""
        member = next(
            (
                m
                for m in self.everyone()
                if m.resume_token == token and m.grant.identity == grant.identity
            ),
            None,
        )
        if member is None:
            return None
        previous = member.link
        if isinstance(previous, HeldLink) and not previous.resumable:
            return None  # ended or too much missed meanwhile: a fresh join is cleaner
        held = self._held.pop(member.id, None)
        if held is not None:
            held.cancel()
        member.link = link
        if not isinstance(previous, HeldLink):
            # The old socket is still open on our side (half-open): it goes quietly.
            previous.end("resumed elsewhere")
        link.post(p.Resumed())
        for message in previous.messages if isinstance(previous, HeldLink) else ():
            link.post(message)
        self.floor.resumed(member)
        self.agenda.resumed(member)
        self.audit.record("resumed", consultation=self.consultation_id, participant=member.id)
        log.info("participant %s: session resumed", member.id)
        return member

    async def _restart_media(self, member: Member) -> None:
        """The client's media connection failed (a network switch): a new one, here."""
        bucket = self._restarts.setdefault(member.id, TokenBucket(1 / 5.0, 2))
        if not bucket.take():
            raise p.ProtocolError("rate_limited", "media restarted too often", "media_restart")
        await self._reopen_media_of(member, reason="restart")
        self.audit.record(
            "media_restarted", consultation=self.consultation_id, participant=member.id
        )

    async def _reopen_media_of(self, member: Member, *, reason: str) -> None:
        """One participant's media session again from scratch: the page makes a new
        RTCPeerConnection (media_reset) for the new offer; mutes are applied again."""
        cid = self.consultation_id
        await self.worker.close_session(cid, member.id)
        member.link.post(p.MediaReset(reason=reason))
        await self.worker.open_session(
            cid,
            member.id,
            publish=member.publish,
            subscribe=can(member.grant.role, Permission.subscribe),
            video_codecs=member.video_codecs,
        )
        if self.members.get(member.id) is not member:
            await self.worker.close_session(cid, member.id)  # it left meanwhile
            return
        for participant in await self.store.participants(cid):
            if participant.id == member.id:
                for kind in ("audio", "video"):
                    if getattr(participant, f"{kind}_muted"):
                        await self.worker.pause_producers(cid, member.id, kind, True)  # type: ignore[arg-type]
        await self.incoming_video.reapply(member.id)
        await self.extra_video.reapply(member.id)

    # ------------------------------------------------------------ messages

    async def handle(self, member: Member, message: p.ClientMessage) -> None:
        """One message of a joined participant. Raises ProtocolError or MediaError, which
        the connection turns into a typed ``error``; the socket lives on."""
        cid, pid, role = self.consultation_id, member.id, member.grant.role
        if not member.admitted:
            raise p.ProtocolError(
                "not_admitted", "you are in the waiting room until the host lets you in"
            )
        if isinstance(message, p.Answer):
            await self.worker.answer(cid, pid, message.sdp)
            self._timed(member)
        elif isinstance(message, p.Candidate):
            await self.worker.candidate(
                cid, pid, message.candidate, message.sdpMid, message.sdpMLineIndex
            )
        elif isinstance(message, p.Mute):
            await self._mute(member, message.kind, message.muted, message.source)
        elif isinstance(message, p.PublishExtra):
            await self.extra_video.publish(member, message.source)
        elif isinstance(message, p.UnpublishExtra):
            await self.extra_video.unpublish(member, message.source)
        elif isinstance(message, p.Record):
            await self._record(member, message)
        elif isinstance(message, p.Consent):
            if self.recording is None:
                raise p.ProtocolError("unexpected", "no recording is asking for consent", "consent")
            await self.recording.answer(member, message.granted)
        elif isinstance(message, p.Remove):
            await self._remove(member, message.participantId)
        elif isinstance(message, p.Admit):
            self._may_admit(member, "admit")
            await self._admit(member, message.participantId)
        elif isinstance(message, p.AdmitAll):
            self._may_admit(member, "admit_all")
            for waiter_id in list(self.waiting):
                await self._admit(member, waiter_id)
        elif isinstance(message, p.SendAway):
            self._may_admit(member, "send_away")
            self._send_away(member, message.participantId, message.message)
        elif isinstance(message, p.MediaRestart):
            await self._restart_media(member)
        elif isinstance(message, p.Chat):
            await self.chat.say(member, message)
        elif isinstance(message, p.Share):
            await self.images.share(member, message)
        elif isinstance(message, p.Unshare):
            self.images.unshare(member)
        elif isinstance(message, p.Pointer):
            self.images.move_pointer(member, message)
        elif isinstance(message, p.VideoPolicy):
            await self.incoming_video.set(member, message.mode)
        elif isinstance(message, p.RaiseHand | p.LowerHand):
            await self.floor.raise_hand(member, isinstance(message, p.RaiseHand))
        elif isinstance(message, p.GiveFloor):
            await self.floor.give(member, message.participantId)
        elif isinstance(message, p.TakeFloor):
            await self.floor.take(member, message.participantId)
        elif isinstance(message, p.MuteAllButMe):
            await self.floor.mute_all_but(member)
        elif isinstance(message, p.SetBedside):
            self.floor.mark_bedside(member, message.participantId)
        elif isinstance(message, p.CameraCaps):
            self.camera.announce_caps(member, message)
        elif isinstance(message, p.CameraControl):
            self.camera.control(member, message)
        elif isinstance(message, p.CameraResult):
            self.camera.answer(member, message)
        elif isinstance(message, p.AgendaNext):
            await self.agenda.move(member, None)
        elif isinstance(message, p.AgendaGoto):
            await self.agenda.move(member, message.bedId)
        elif isinstance(message, p.End):
            if not can(role, Permission.end_consultation):
                raise p.ProtocolError("forbidden", f"role {role} may not end it", "end")
            await self.revocation.revoke(
                cid, Scope.consultation, reason="ended", by=member.grant.identity
            )
        else:
            raise p.ProtocolError("unexpected", f"{message.type} is not handled here")

    # ------------------------------------------------------------ the waiting room

    @staticmethod
    def _may_admit(member: Member, ref: str) -> None:
        if not can(member.grant.role, Permission.admit):
            raise p.ProtocolError("forbidden", f"role {member.grant.role} may not admit", ref)

    async def _admit(self, host: Member, participant_id: str) -> None:
        waiter = self.waiting.pop(participant_id, None)
        if waiter is None:
            raise p.ProtocolError("unexpected", "nobody by that id is waiting", "admit")
        # Their join time starts now: the wait was the host's, not the system's.
        waiter.join_started = time.monotonic()
        try:
            await self._seat(waiter)
        except RoomError as exc:
            # No seat (the call is full): back to the front of the line, the host told.
            self.waiting = {waiter.id: waiter, **self.waiting}
            self._announce_waiting()
            raise p.ProtocolError(exc.code, str(exc), "admit") from None  # type: ignore[arg-type]
        self.audit.record(
            "admitted",
            consultation=self.consultation_id,
            participant=waiter.id,
            identity=waiter.grant.identity,
            by=host.grant.identity,
        )
        self.events.publish(
            ev.ParticipantAdmitted(
                consultation=self.consultation_id,
                by=host.grant.identity,
                **ev.who(waiter.id, waiter.grant),
            )
        )
        self._announce_waiting()

    def _send_away(self, host: Member, participant_id: str, note: str | None) -> None:
        waiter = self.waiting.pop(participant_id, None)
        if waiter is None:
            raise p.ProtocolError("unexpected", "nobody by that id is waiting", "send_away")
        self.audit.record(
            "sent_away",
            consultation=self.consultation_id,
            participant=waiter.id,
            identity=waiter.grant.identity,
            by=host.grant.identity,
        )
        waiter.link.end("sent_away", note or None)
        self._announce_waiting()

    # ------------------------------------------------------------ the call

    async def _mute(
        self, member: Member, kind: Kind, muted: bool, source: p.ExtraSource | None = None
    ) -> None:
        if not can(member.grant.role, Permission.publish):
            raise p.ProtocolError("forbidden", "nothing to mute: this role cannot publish", "mute")
        if kind == "audio" and not muted and not self.floor.may_unmute(member):
            # A ward round's remote voice is heard only with the floor (floor.py).
            raise p.ProtocolError("forbidden", "ask for the floor: raise your hand", "mute")
        # Enforced by the Worker, not only reported: a client that keeps sending after
        # saying "muted" (or a modified page) reaches nobody.
        await self.worker.pause_producers(self.consultation_id, member.id, kind, muted, source)
        if source is None:
            await self.store.set_muted(self.consultation_id, member.id, kind, muted)
        if kind == "audio" and not muted:
            self.agenda.heard(member)
        self.broadcast(
            p.MuteChanged(participantId=member.id, kind=kind, muted=muted, source=source),
            exclude=member.id,
        )

    async def _record(self, member: Member, message: p.Record) -> None:
        role = member.grant.role
        if not can(role, Permission.record):
            raise p.ProtocolError("forbidden", f"role {role} may not record", "record")
        if message.action == "stop":
            if self.recording is None:
                raise p.ProtocolError("unexpected", "nothing is being recorded", "record")
            self.recording.stop("stopped", by=member.id)
            return
        if self.recording is not None:
            raise p.ProtocolError(
                "unexpected", f"recording is already {self.recording.state}", "record"
            )
        self.recording = RecordingConsent(self, requested_by=member)
        await self.recording.begin()

    async def _remove(self, member: Member, participant_id: str) -> None:
        role = member.grant.role
        if not can(role, Permission.remove_participant):
            raise p.ProtocolError("forbidden", f"role {role} may not remove", "remove")
        if participant_id == member.id:
            raise p.ProtocolError("unexpected", "to go, leave", "remove")
        target = self.members.get(participant_id)
        if target is None:
            raise p.ProtocolError("unexpected", "no such participant here", "remove")
        # The person, not only this session: their link must not bring them back. The
        # revocation outlives every token they can hold for this consultation.
        await self.revocation.revoke(
            self.consultation_id,
            Scope.identity,
            target.grant.identity,
            reason="removed",
            by=member.grant.identity,
        )

    def _relay(self, role: Role) -> bool:
        """Whether this Role gets a TURN credential (MediaConfig.turn_for_observers)."""
        return can(role, Permission.publish) or self._media.turn_for_observers

    def _timed(self, member: Member) -> None:
        """Their first answer was taken: their join time is ``joined`` plus that offer."""
        if member.join_timed or member.join_setup_s is None or member.first_offer_at is None:
            return
        member.join_timed = True
        if self._on_joined is not None:
            self._on_joined(member.join_setup_s + time.monotonic() - member.first_offer_at)

    # ------------------------------------------------------------ from the Worker

    def offer(self, participant_id: str, sdp: str, slots: list[SlotDescription]) -> None:
        member = self.members.get(participant_id)
        if member is not None and member.first_offer_at is None:
            member.first_offer_at = time.monotonic()
        self.post(
            participant_id,
            p.Offer(
                sdp=sdp,
                tracks=[
                    p.TrackSlot(
                        mid=s.mid,
                        kind=s.kind,
                        role=s.role,
                        participantId=s.participant_id,
                        producerId=s.producer_id,
                        source=s.source,
                    )
                    for s in slots
                ],
            ),
        )

    def producer_opened(self, producer: ProducerInfo) -> None:
        self.broadcast(
            p.TrackPublished(
                participantId=producer.participant_id,
                producerId=producer.producer_id,
                kind=producer.kind,
                source=producer.source,
            )
        )

    def producer_closed(self, producer: ProducerInfo) -> None:
        self.broadcast(
            p.TrackUnpublished(
                participantId=producer.participant_id,
                producerId=producer.producer_id,
                kind=producer.kind,
                source=producer.source,
            )
        )

    def session_failed(self, participant_id: str, reason: str) -> None:
        """A participant's media session died. Its media connection (ICE gone: a firewall
        closing, a network switch) gets new ones with back-off while the client is still
        there; a client that does not answer offers, or whose media keeps failing, is ended."""
        member = self.members.get(participant_id)
        if member is None:
            return
        recovering = reason.startswith("media connection") and not isinstance(member.link, HeldLink)
        now = time.monotonic()
        attempts, last = self._recoveries.get(participant_id, (0, now))
        if now - last > RECOVERY_FORGOTTEN_S:
            attempts = 0  # its media worked for a good while since: a new episode
        if not recovering or attempts >= MEDIA_RECOVERIES:
            self._recoveries.pop(participant_id, None)
            member.link.end(reason)
            return
        self._recoveries[participant_id] = (attempts + 1, now)
        delay = min(2.0**attempts, 16.0)
        log.info("%r: %s for %s; new media in %.0f s", self, reason, participant_id, delay)
        loop = asyncio.get_running_loop()
        loop.call_later(
            delay, lambda: self.spawn(self._recover_media(participant_id), "recovering media")
        )

    async def _recover_media(self, participant_id: str) -> None:
        member = self.members.get(participant_id)
        if member is None:
            return
        await self._reopen_media_of(member, reason="media_lost")
        self.audit.record(
            "media_recovered", consultation=self.consultation_id, participant=participant_id
        )

    def notice(self, participant_id: str, code: str, message: str) -> None:
        if code == "video_unavailable":
            self.post(participant_id, p.Error(code="video_unavailable", message=message))
        elif code == "video_speaker":
            self.incoming_video.speaker(participant_id, message)
        elif code == "video_rate":
            # "<publisher id> <mode>": a video this participant receives fits their link.
            publisher, _, mode = message.partition(" ")
            if mode in ("full", "reduced", "stills") and publisher:
                self.post(
                    participant_id,
                    p.VideoRate(participantId=publisher, mode=mode),  # type: ignore[arg-type]
                )
        else:
            log.warning("%r: unknown notice %s for %s", self, code, participant_id)

    def recording_event(self, event: dict[str, Any]) -> None:
        if self.recording is not None:
            self.recording.on_recorder_event(event)

    def media_lost(self, reason: str) -> None:
        """The media Worker died and another holds the consultation now: everyone gets a new
        media session there (their page makes a new RTCPeerConnection), mutes are applied
        again, and a running recording goes on in new segments."""
        log.warning(
            "%r: media moved (%s); reopening %d session(s)", self, reason, len(self.members)
        )
        self.audit.record("media_moved", consultation=self.consultation_id, reason=reason)
        for member in self.members.values():
            member.link.post(p.MediaReset(reason=reason))
        self.spawn(self._reopen_media(), "reopening media sessions")

    async def _reopen_media(self) -> None:
        cid = self.consultation_id
        for member in list(self.members.values()):
            if self.members.get(member.id) is not member:
                continue  # left while the others' sessions were being opened
            await self.worker.open_session(
                cid,
                member.id,
                publish=member.publish,
                subscribe=can(member.grant.role, Permission.subscribe),
                video_codecs=member.video_codecs,
            )
            if self.members.get(member.id) is not member:
                await self.worker.close_session(cid, member.id)
        for participant in await self.store.participants(cid):
            for kind, muted in (
                ("audio", participant.audio_muted),
                ("video", participant.video_muted),
            ):
                if muted and participant.id in self.members:
                    await self.worker.pause_producers(cid, participant.id, kind, True)  # type: ignore[arg-type]
        for participant_id in list(self.members):
            await self.incoming_video.reapply(participant_id)
            await self.extra_video.reapply(participant_id)
        if self.recording is not None:
            await self.recording.resume()


def _info(participant: Participant) -> p.ParticipantInfo:
    return p.ParticipantInfo(
        id=participant.id,
        name=participant.name,
        role=participant.role,
        audioMuted=participant.audio_muted,
        videoMuted=participant.video_muted,
    )
