"""Each participant's incoming video (a low-bandwidth mode for a village link): everyone's,
none (``audio_only``: the Worker pauses every video Consumer of theirs), or only the active
speaker's (``speaker``: the Worker decides who speaks and forwards only that video).

Enforced by the Worker, not by the page: a page that asked for audio only is sent no video
packets at all, which is the point on a link that cannot carry them. The state is reported
back (``video_policy``), with whose video is shown in speaker mode, and applied again when
the participant's media session is made anew (a media restart, a Worker failover).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from signaling import protocol as p
from signaling.room.limits import TokenBucket

if TYPE_CHECKING:
    from signaling.room.members import Member
    from signaling.room.room import Room

# Each change pauses or resumes Consumers and asks publishers for keyframes: a few in a
# row, then one every 2 s (a page proposing the mode and a person toggling it need less).
CHANGES_BURST = 4.0
CHANGES_PER_S = 0.5


class IncomingVideo:
    def __init__(self, room: Room) -> None:
        self._room = room
        self.modes: dict[str, p.VideoMode] = {}
        self.showing: dict[str, str | None] = {}
        self._buckets: dict[str, TokenBucket] = {}

    async def set(self, member: Member, mode: p.VideoMode) -> None:
        bucket = self._buckets.setdefault(
            member.grant.identity, TokenBucket(CHANGES_PER_S, CHANGES_BURST)
        )
        if not bucket.take():
            raise p.ProtocolError("rate_limited", "video mode changed too often", "video_policy")
        if mode == "all":
            self.modes.pop(member.id, None)
        else:
            self.modes[member.id] = mode
        self.showing.pop(member.id, None)
        await self._apply(member.id, mode)
        self._room.audit.record(
            "video_policy",
            consultation=self._room.consultation_id,
            participant=member.id,
            mode=mode,
        )
        # Speaker mode: the Worker's notice of whose video it is follows at once.
        if mode != "speaker":
            member.link.post(p.VideoPolicyState(mode=mode))

    async def reapply(self, participant_id: str) -> None:
        """After a new media session: the Worker forgot; tell it again."""
        mode = self.modes.get(participant_id)
        if mode is not None:
            await self._apply(participant_id, mode)

    async def _apply(self, participant_id: str, mode: p.VideoMode) -> None:
        worker, cid = self._room.worker, self._room.consultation_id
        await worker.pause_consumers(cid, participant_id, "video", mode == "audio_only")
        await worker.follow_speaker(cid, participant_id, mode == "speaker")

    def speaker(self, participant_id: str, showing: str) -> None:
        """The Worker's ``video_speaker`` notice: whose video this follower is sent now."""
        if self.modes.get(participant_id) != "speaker":
            return
        self.showing[participant_id] = showing or None
        self._room.post(participant_id, p.VideoPolicyState(mode="speaker", showing=showing or None))

    def left(self, participant_id: str) -> None:
        self.modes.pop(participant_id, None)
        self.showing.pop(participant_id, None)
