"""Extra video tracks a participant publishes besides the camera: the screen (``screen``)
and a second camera (``camera2``: a dermatoscope, a wound close-up).

Permissions are checked here, on the server: ``share_screen`` for the screen (doctors,
experts, nurses; not patients), ``publish`` for a second camera. At most
``MAX_EXTRA_PRODUCERS`` at once (``too_many_producers`` beyond), and changes are rate
limited: each one renegotiates the publisher's connection and every subscriber's. The
Worker enforces the same limit again. What is published is remembered so a new media
session (a media restart, a Worker failover) asks the page for the same tracks again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from media.client import MAX_EXTRA_PRODUCERS
from rooms.roles import Permission, can
from signaling import protocol as p
from signaling.room.limits import TokenBucket

if TYPE_CHECKING:
    from signaling.room.members import Member
    from signaling.room.room import Room

# A person starting and stopping a share needs a few; a loop renegotiating everyone's
# connection many times a second must not get them.
CHANGES_BURST = 6.0
CHANGES_PER_S = 0.5


class ExtraVideo:
    def __init__(self, room: Room) -> None:
        self._room = room
        # Participant id -> extra sources published, in order.
        self.published: dict[str, list[p.ExtraSource]] = {}
        self._buckets: dict[str, TokenBucket] = {}

    def _take(self, member: Member, ref: str) -> None:
        bucket = self._buckets.setdefault(
            member.grant.identity, TokenBucket(CHANGES_PER_S, CHANGES_BURST)
        )
        if not bucket.take():
            raise p.ProtocolError("rate_limited", "extra video changed too often", ref)

    async def publish(self, member: Member, source: p.ExtraSource) -> None:
        role = member.grant.role
        needed = Permission.share_screen if source == "screen" else Permission.publish
        if not can(role, needed):
            raise p.ProtocolError(
                "forbidden", f"role {role} may not publish {source}", "publish_extra"
            )
        mine = self.published.setdefault(member.id, [])
        if source in mine:
            raise p.ProtocolError("unexpected", f"{source} is published already", "publish_extra")
        if len(mine) >= MAX_EXTRA_PRODUCERS:
            raise p.ProtocolError(
                "too_many_producers",
                f"at most {MAX_EXTRA_PRODUCERS} extra video tracks at once",
                "publish_extra",
            )
        self._take(member, "publish_extra")
        room = self._room
        await room.worker.publish_extra(room.consultation_id, member.id, source)
        mine.append(source)
        room.audit.record(
            "extra_video_published",
            consultation=room.consultation_id,
            participant=member.id,
            source=source,
        )

    async def unpublish(self, member: Member, source: p.ExtraSource) -> None:
        mine = self.published.get(member.id, [])
        if source not in mine:
            raise p.ProtocolError("unexpected", f"{source} is not published", "unpublish_extra")
        self._take(member, "unpublish_extra")
        room = self._room
        mine.remove(source)
        await room.worker.unpublish_extra(room.consultation_id, member.id, source)
        room.audit.record(
            "extra_video_unpublished",
            consultation=room.consultation_id,
            participant=member.id,
            source=source,
        )

    async def reapply(self, participant_id: str) -> None:
        """After a new media session: the Worker forgot; ask for the same tracks again."""
        room = self._room
        for source in self.published.get(participant_id, []):
            await room.worker.publish_extra(room.consultation_id, participant_id, source)

    def left(self, participant_id: str) -> None:
        self.published.pop(participant_id, None)
