"""Floor control in a ward round, enforced by the media Worker.

Remote experts join a ward round with their audio paused by the server (their Producer is
paused: nothing of it is forwarded or recorded, whatever the page sends). They raise a
hand; the attending (``Permission.floor``) gives the floor to one of them, which resumes
that participant's audio, and takes it back, which pauses it again. Giving the floor to
someone else takes it from whoever held it. "Mute all but me" pauses everyone's audio but
the attending's. A participant whose audio the floor holds cannot unmute it.

The pause is also kept as the participant's mute in the RoomStore, so a new media session
(a media restart, a Worker failover) applies it again, and every page shows it.
Everyone gets ``floor`` (holder, raised hands in order, who is held) on each change and on
joining. Each step is audited; hands are rate-limited per person.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rooms.consultation import ConsultationKind
from rooms.roles import Permission, Role, can
from signaling import protocol as p
from signaling.room.limits import TokenBucket

if TYPE_CHECKING:
    from signaling.room.members import Member
    from signaling.room.room import Room
    from signaling.tokens import Grant

# Who joins a ward round held (muted by the server until given the floor): the remote
# experts. The bedside (nurse, doctor) and the patient in the bed speak freely; observers
# publish nothing.
HELD_ROLES = frozenset({Role.expert})
# Raising and lowering a hand: a few in a row, then one every 2 s.
HANDS_BURST = 4.0
HANDS_PER_S = 0.5
# At most this many raised hands are kept (the call's cap is far below it).
HANDS_MAX = 64


def is_ward_round(member: Member) -> bool:
    return member.grant.kind == ConsultationKind.ward_round


def holds(grant: Grant) -> bool:
    """Whether this participant's audio is paused by the server when they join."""
    return (
        grant.kind == ConsultationKind.ward_round
        and grant.role in HELD_ROLES
        and can(grant.role, Permission.publish)
    )


def joins_held(member: Member) -> bool:
    return holds(member.grant)


class Floor:
    def __init__(self, room: Room) -> None:
        self._room = room
        self.holder: str | None = None
        # Raised hands, oldest first (a dict keeps insertion order).
        self.hands: dict[str, None] = {}
        # Participants whose audio the floor pauses (held roles without the floor).
        self.held: set[str] = set()
        self.active = False
        # The participant the attending marked as the bedside device, if any.
        self.marked: str | None = None
        self._buckets: dict[str, TokenBucket] = {}

    def state(self) -> p.FloorState:
        return p.FloorState(
            holder=self.holder,
            hands=list(self.hands),
            held=sorted(self.held),
            bedside=self.bedside(),
        )

    def bedside(self) -> str | None:
        """Whose video is shown large: the one marked, else the first nurse, else the first
        doctor to have joined (members are kept in the order they were seated)."""
        members = self._room.members
        if self.marked in members:
            return self.marked
        for role in (Role.nurse, Role.doctor):
            found = next((m.id for m in members.values() if m.grant.role == role), None)
            if found is not None:
                return found
        return None

    def announce(self) -> None:
        if self.active:
            self._room.broadcast(self.state())

    # ------------------------------------------------------------ joining and leaving

    async def joined(self, member: Member) -> None:
        """After their media session is open: held roles are paused, everyone told."""
        if not is_ward_round(member):
            return
        self.active = True
        if joins_held(member):
            self.held.add(member.id)
            room = self._room
            # Shown muted already: their Participant joined the store muted (Room.join).
            await room.worker.pause_producers(room.consultation_id, member.id, "audio", True)
        # Everyone: the newcomer may be the bedside now.
        self.announce()

    def resumed(self, member: Member) -> None:
        if self.active:
            member.link.post(self.state())

    def left(self, participant_id: str) -> None:
        self.hands.pop(participant_id, None)
        self.held.discard(participant_id)
        if self.holder == participant_id:
            self.holder = None
        if self.marked == participant_id:
            self.marked = None
        self.announce()

    def may_unmute(self, member: Member) -> bool:
        return member.id not in self.held

    # ------------------------------------------------------------ messages

    async def raise_hand(self, member: Member, raised: bool) -> None:
        ref = "raise_hand" if raised else "lower_hand"
        self._active(ref)
        if not can(member.grant.role, Permission.publish):
            raise p.ProtocolError("forbidden", "this role cannot speak in the call", ref)
        bucket = self._buckets.setdefault(
            member.grant.identity, TokenBucket(HANDS_PER_S, HANDS_BURST)
        )
        if not bucket.take():
            raise p.ProtocolError("rate_limited", "hand raised too often", ref)
        if raised:
            if member.id == self.holder or member.id in self.hands:
                return
            if len(self.hands) >= HANDS_MAX:
                raise p.ProtocolError("rate_limited", "too many raised hands", ref)
            self.hands[member.id] = None
        elif self.hands.pop(member.id, ...) is ...:
            return
        self._audit("hand_raised" if raised else "hand_lowered", member)
        self.announce()

    async def give(self, member: Member, participant_id: str) -> None:
        self._may(member, "give_floor")
        target = self._room.members.get(participant_id)
        if target is None:
            raise p.ProtocolError("unexpected", "no such participant here", "give_floor")
        if not can(target.grant.role, Permission.publish):
            raise p.ProtocolError("unexpected", "this participant cannot speak", "give_floor")
        previous = self._room.members.get(self.holder or "")
        if previous is not None and previous.id != participant_id and joins_held(previous):
            # One remote voice at a time; the bedside keeps its own.
            await self._pause(previous.id, True, held=True)
        self.holder = participant_id
        self.hands.pop(participant_id, None)
        self.held.discard(participant_id)
        await self._pause(participant_id, False, held=False)
        self._room.agenda.floor_given(target)
        self._audit("floor_given", member, participant_id)
        self.announce()

    async def take(self, member: Member, participant_id: str) -> None:
        self._may(member, "take_floor")
        target = self._room.members.get(participant_id)
        if target is None:
            raise p.ProtocolError("unexpected", "no such participant here", "take_floor")
        if participant_id == member.id:
            raise p.ProtocolError("unexpected", "to be quiet, mute", "take_floor")
        if self.holder == participant_id:
            self.holder = None
        await self._pause(participant_id, True, held=joins_held(target))
        self._audit("floor_taken", member, participant_id)
        self.announce()

    async def mute_all_but(self, member: Member) -> None:
        self._may(member, "mute_all_but_me")
        self.holder = None
        for other in list(self._room.members.values()):
            if other.id != member.id and can(other.grant.role, Permission.publish):
                await self._pause(other.id, True, held=joins_held(other))
        self._audit("mute_all_but_me", member)
        self.announce()

    def mark_bedside(self, member: Member, participant_id: str | None) -> None:
        self._may(member, "set_bedside")
        if participant_id is not None and participant_id not in self._room.members:
            raise p.ProtocolError("unexpected", "no such participant here", "set_bedside")
        self.marked = participant_id
        self._audit("bedside_marked", member, participant_id)
        self.announce()

    # ------------------------------------------------------------ helpers

    async def _pause(self, participant_id: str, paused: bool, *, held: bool) -> None:
        """Pause or resume someone's audio at the Worker, kept as their mute (so a new
        media session applies it again) and shown to everyone."""
        room = self._room
        if held:
            self.held.add(participant_id)
        else:
            self.held.discard(participant_id)
        await room.worker.pause_producers(room.consultation_id, participant_id, "audio", paused)
        await room.store.set_muted(room.consultation_id, participant_id, "audio", paused)
        room.broadcast(p.MuteChanged(participantId=participant_id, kind="audio", muted=paused))

    def _active(self, ref: str) -> None:
        if not self.active:
            raise p.ProtocolError("unexpected", "only a ward round has a floor", ref)

    def _may(self, member: Member, ref: str) -> None:
        if not can(member.grant.role, Permission.floor):
            raise p.ProtocolError(
                "forbidden", f"role {member.grant.role} may not run the floor", ref
            )
        self._active(ref)

    def _audit(self, action: str, member: Member, target: str | None = None) -> None:
        extra = {} if target is None else {"target": target}
        self._room.audit.record(
            action,
            consultation=self._room.consultation_id,
            participant=member.id,
            **extra,
        )
