"""Far-end camera control in a ward round: an expert with the floor (or the attending) moves
the bedside camera's pan, tilt and zoom through signaling; the bedside page applies it with
``MediaStreamTrack.applyConstraints`` or refuses.

The server checks everything it can before the bedside is bothered: a ward round, the
sender holds the floor or has ``Permission.floor``, the target is in the call, and its page
said (``camera_caps``) it can move along every axis asked for; otherwise a typed error
(``forbidden``, ``unexpected``, ``camera_unsupported``) and nothing reaches the bedside.
Requests are rate-limited per sender and a bedside's answers are relayed only for requests
it was sent, at most ``PENDING`` at a time.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from typing import TYPE_CHECKING

from rooms.roles import Permission, can
from signaling import protocol as p
from signaling.room.floor import is_ward_round
from signaling.room.limits import TokenBucket

if TYPE_CHECKING:
    from signaling.room.members import Member
    from signaling.room.room import Room

# A person pressing arrow buttons: a few at once, then five a second.
MOVES_BURST = 5.0
MOVES_PER_S = 5.0
# Requests awaiting the bedside's answer (the oldest are forgotten beyond it).
PENDING = 32
AXES = ("pan", "tilt", "zoom")


class FarCamera:
    def __init__(self, room: Room) -> None:
        self._room = room
        # Participant id -> the axes its camera can move.
        self.caps: dict[str, frozenset[str]] = {}
        # Request id -> (who asked, the bedside).
        self._pending: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._buckets: dict[str, TokenBucket] = {}

    def announce_caps(self, member: Member, message: p.CameraCaps) -> None:
        if not is_ward_round(member):
            raise p.ProtocolError(
                "unexpected", "only a ward round has camera control", "camera_caps"
            )
        self.caps[member.id] = frozenset(a for a in AXES if getattr(message, a))

    def control(self, member: Member, message: p.CameraControl) -> None:
        ref = "camera_control"
        if not is_ward_round(member):
            raise p.ProtocolError("unexpected", "only a ward round has camera control", ref)
        if member.id != self._room.floor.holder and not can(member.grant.role, Permission.floor):
            raise p.ProtocolError("forbidden", "ask for the floor to move the camera", ref)
        bucket = self._buckets.setdefault(
            member.grant.identity, TokenBucket(MOVES_PER_S, MOVES_BURST)
        )
        if not bucket.take():
            raise p.ProtocolError("rate_limited", "the camera is moved too often", ref)
        target = self._room.members.get(message.participantId)
        if target is None or target.id == member.id:
            raise p.ProtocolError("unexpected", "no such participant here", ref)
        asked = [a for a in AXES if getattr(message, a) is not None]
        if not asked:
            raise p.ProtocolError("unexpected", "say which way to move", ref)
        missing = [a for a in asked if a not in self.caps.get(target.id, frozenset())]
        if missing:
            raise p.ProtocolError(
                "camera_unsupported", f"that camera cannot {', '.join(missing)}", ref
            )
        request_id = "cam_" + secrets.token_hex(8)
        self._pending[request_id] = (member.id, target.id)
        while len(self._pending) > PENDING:
            self._pending.popitem(last=False)
        target.link.post(
            p.CameraRequest(
                requestId=request_id,
                participantId=member.id,
                pan=message.pan,
                tilt=message.tilt,
                zoom=message.zoom,
            )
        )
        self._room.audit.record(
            "camera_control",
            consultation=self._room.consultation_id,
            participant=member.id,
            target=target.id,
        )

    def answer(self, member: Member, message: p.CameraResult) -> None:
        pending = self._pending.get(message.requestId)
        if pending is None or pending[1] != member.id:
            raise p.ProtocolError("unexpected", "no such camera request", "camera_result")
        del self._pending[message.requestId]
        asker, _ = pending
        self._room.post(
            asker,
            p.CameraAnswer(
                requestId=message.requestId,
                participantId=member.id,
                applied=message.applied,
                reason=message.reason,
            ),
        )

    def left(self, participant_id: str) -> None:
        self.caps.pop(participant_id, None)
