"""What a Room shows everyone: one shared image at a time, and its presenter's pointer.

Images arrive over HTTP (signaling/sharing/api.py hands the upload here once it has found
the uploader admitted in this Room), are made safe by signaling/sharing/images.py and kept
where the consultation keeps things (signaling/sharing/store.py). ``share`` tells everyone
in the call what to fetch; the picture itself never travels on the WebSocket. The one who
shared is the presenter: only their pointer moves, and it is relayed to the others as
fractions of the image, so each viewer's own zoom and pan place it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from rooms.roles import Permission, can
from signaling import protocol as p
from signaling.room.limits import TokenBucket
from signaling.sharing.images import prepare
from signaling.sharing.store import Keeping, MemoryShelf, SharedImage, new_shared_image

if TYPE_CHECKING:
    from signaling.room.members import Member
    from signaling.room.room import Room

# Pages send at most ~15 a second; beyond 20 the server drops them (the next carries the
# position anyway, so nothing is lost that matters).
POINTER_PER_S = 20.0


class NotAllowed(Exception):
    """The HTTP caller may not do this in this Room (not in the call, or no permission)."""


class RoomImages:
    def __init__(self, room: Room, keeping: Keeping) -> None:
        self._room = room
        self._keeping = keeping
        self.current: p.Shared | None = None
        self.pointer: p.PointerMoved | None = None
        self._pointer_buckets: dict[str, TokenBucket] = {}

    # ------------------------------------------------------------ over HTTP

    async def upload(self, member: Member, data: bytes) -> SharedImage:
        """Keep an image ``member`` sends (raises UploadRefused with the reason)."""
        if not can(member.grant.role, Permission.share_images):
            raise NotAllowed(f"role {member.grant.role} may not share images")
        sharing = self._keeping.sharing
        if sharing is not None:
            prepared = await sharing.prepare(data)
        else:
            prepared = await asyncio.to_thread(prepare, data)
        image = new_shared_image(prepared, member.id, str(member.grant.role))
        shelf = await self._keeping.shelf()
        await shelf.put(image, prepared)
        self._room.audit.record(
            "image_uploaded",
            consultation=self._room.consultation_id,
            participant=member.id,
            image=image.id,
            kind=image.kind,
            bytes=prepared.size,
        )
        return image

    async def read(self, member: Member, image_id: str, preset: str) -> tuple[SharedImage, bytes]:
        """A rendition for someone in the call; LookupError if there is none."""
        shelf = await self._keeping.shelf()
        image = await shelf.get(image_id)
        if image is None or preset not in image.presets:
            raise LookupError("no such image")
        data = await shelf.read(image, preset)
        self._room.audit.record(
            "image_viewed",
            consultation=self._room.consultation_id,
            participant=member.id,
            image=image.id,
            preset=preset,
        )
        return image, data

    # ------------------------------------------------------------ messages

    async def share(self, member: Member, message: p.Share) -> None:
        if not can(member.grant.role, Permission.share_images):
            raise p.ProtocolError(
                "forbidden", f"role {member.grant.role} may not share images", "share"
            )
        shelf = await self._keeping.shelf()
        image = await shelf.get(message.imageId)
        if image is None:
            raise p.ProtocolError("unexpected", "no such image in this consultation", "share")
        preset = message.preset or image.presets[0]
        if preset not in image.presets:
            raise p.ProtocolError("unexpected", "this image has no such preset", "share")
        info = p.ImageInfo(**image.info) if image.info is not None else None
        self.current = p.Shared(
            imageId=image.id,
            by=member.id,
            kind=image.kind,  # type: ignore[arg-type]
            mediaType=image.media_type,
            width=image.width,
            height=image.height,
            presets=list(image.presets),
            preset=preset,
            info=info,
        )
        self.pointer = None
        if isinstance(shelf, MemoryShelf):
            shelf.showing = image.id
        self._room.broadcast(self.current)
        self._room.audit.record(
            "image_shared",
            consultation=self._room.consultation_id,
            participant=member.id,
            image=image.id,
        )

    def unshare(self, member: Member) -> None:
        if self.current is None:
            raise p.ProtocolError("unexpected", "nothing is being shown", "unshare")
        # The presenter, or whoever runs the call (may admit): not any patient who may share.
        if member.id != self.current.by and not can(member.grant.role, Permission.admit):
            raise p.ProtocolError(
                "forbidden", "only the presenter or the host closes it", "unshare"
            )
        self._end(by=member.id)

    def move_pointer(self, member: Member, message: p.Pointer) -> None:
        if self.current is None or member.id != self.current.by:
            raise p.ProtocolError("forbidden", "only the presenter moves the pointer", "pointer")
        bucket = self._pointer_buckets.setdefault(
            member.id, TokenBucket(POINTER_PER_S, POINTER_PER_S)
        )
        if not bucket.take():
            return
        hidden = message.x is None or message.y is None
        self.pointer = p.PointerMoved(
            participantId=member.id,
            x=None if hidden else message.x,
            y=None if hidden else message.y,
        )
        self._room.broadcast(self.pointer, exclude=member.id)

    # ------------------------------------------------------------ the Room's people

    def joined(self, member: Member) -> None:
        """Someone let in (or back after a reload) sees what everyone sees."""
        if self.current is not None:
            member.link.post(self.current)
            if self.pointer is not None and self.pointer.participantId != member.id:
                member.link.post(self.pointer)

    def left(self, participant_id: str) -> None:
        self._pointer_buckets.pop(participant_id, None)
        if self.current is not None and self.current.by == participant_id:
            self._end(by=None)

    def _end(self, by: str | None) -> None:
        assert self.current is not None
        ended = p.ShareEnded(imageId=self.current.imageId, by=by)
        self.current, self.pointer = None, None
        self._room.broadcast(ended)
