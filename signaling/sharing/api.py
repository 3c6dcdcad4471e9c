"""Images shown in a call, over HTTP: uploaded (multipart, one ``file`` part) and fetched
(one rendition at a time) with the participant's own join token, never over the 64 KiB
WebSocket.

Authorization is the join token (``Authorization: Bearer``) of someone *in the call now*:
its consultation must be the one in the path, it must pass the revocation checks, and its
person must be admitted in the consultation's Room on this node. A person in the waiting
room, removed, or gone gets 403: images are part of the call, like its media. Uploading
needs ``share_images`` as well.

Bodies: the app reads every body whole under a 30 s deadline and at most 256 KiB. An
upload gets ``upload_middleware`` in front of that (as the front desk's forms do, with the
same reading code): a Content-Length of at most 50 MiB (the largest DICOM file taken; a
photo is at most 20 MiB) and a token that checks out, both before a byte of the body is
read, then a deadline that grows with the size.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import BaseModel

from rooms.records.errors import RecordError
from signaling.console.attachments import UploadRefused
from signaling.console.forms import BadForm, parse_multipart, read_upload
from signaling.http import openapi
from signaling.http.appkeys import REVOCATION
from signaling.http.openapi import Content, Operation
from signaling.room.members import Member
from signaling.room.room import Room
from signaling.room.rooms import Rooms
from signaling.room.showing import NotAllowed
from signaling.sharing.images import MAX_DICOM_BYTES
from signaling.tokens import Grant, TokenError, verify

log = logging.getLogger(__name__)

BASE = "/api/consultations/{consultation}/images"
# The largest file taken, plus the multipart framing and headers.
MAX_BODY = MAX_DICOM_BYTES + 64 * 1024
_UPLOAD_PATH = re.compile(r"^/api/consultations/[A-Za-z0-9_-]{6,64}/images$")
_PRESET = re.compile(r"^[a-z_]{1,24}$")
_IMAGE = re.compile(r"^img_[0-9a-f]{16}$")


class ImageInfoOut(BaseModel):
    """Technical tags of a DICOM image (nothing that names the patient)."""

    modality: str | None = None
    bodyPart: str | None = None
    sliceThickness: float | None = None
    frames: int | None = None


class ImageOut(BaseModel):
    """An image kept for the call: share it with the ``share`` message, fetch each preset."""

    id: str
    kind: str  # photo | dicom
    mediaType: str
    width: int
    height: int
    presets: list[str]
    info: ImageInfoOut | None = None


class RefusedOut(BaseModel):
    """Why an upload was not taken: ``error`` a fixed code (empty, too_large, bad_type,
    bad_image, bad_dicom, busy), ``message`` a sentence naming nothing in the file."""

    error: str
    message: str


_TEXT = Content("text/plain", "Why not")
_AUTH = ("callToken",)


def setup(app: web.Application, rooms: Rooms, secret: bytes) -> None:
    api = SharingApi(rooms, secret)
    routes = openapi.routes(app)
    routes.add(
        app,
        Operation(
            "POST",
            BASE,
            "Upload an image to show in the call (a photo, or a DICOM file)",
            {201: ImageOut, 400: RefusedOut, 401: _TEXT, 403: _TEXT, 413: _TEXT, 503: RefusedOut},
            security=_AUTH,
            tag="sharing",
            description="multipart/form-data with one part named `file`: JPEG, PNG or WebP "
            "(at most 20 MB; re-encoded, no metadata kept) or DICOM Part 10 (at most 50 MB; "
            "rendered per window preset, no patient tag kept). Needs `share_images`.",
        ),
        api.upload,
    )
    routes.add(
        app,
        Operation(
            "GET",
            BASE + "/{image}/{preset}",
            "One rendition of an image of the call",
            {
                200: Content("image/*", "The picture (PNG, JPEG or WebP)", binary=True),
                401: _TEXT,
                403: _TEXT,
                404: _TEXT,
            },
            security=_AUTH,
            tag="sharing",
        ),
        api.image,
    )
    # Before the connection guard's, which would refuse a body over 256 KiB.
    app.middlewares.insert(0, api.middleware)


class SharingApi:
    def __init__(self, rooms: Rooms, secret: bytes) -> None:
        self.rooms = rooms
        self.secret = secret

    async def _caller(self, request: web.Request) -> tuple[Room, Member]:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        if not token:
            raise web.HTTPUnauthorized(text="a join token is required")
        revocation = request.app[REVOCATION]
        try:
            grant = verify(self.secret, token)
            await revocation.check(grant)
        except TokenError as exc:
            raise web.HTTPUnauthorized(text=str(exc)) from None
        if grant.consultation_id != request.match_info["consultation"]:
            raise web.HTTPForbidden(text="this token is for another consultation")
        room = self.rooms.get(grant.consultation_id)
        member = _admitted(room, grant)
        if room is None or member is None:
            raise web.HTTPForbidden(text="only those in the call see its images")
        return room, member

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if request.method != "POST" or not _UPLOAD_PATH.match(request.path):
            return await handler(request)
        return await read_upload(request, handler, MAX_BODY, self._caller)

    async def upload(self, request: web.Request) -> web.Response:
        room, member = await self._caller(request)
        try:
            parts = parse_multipart(await request.read(), request.headers.get("Content-Type", ""))
        except BadForm as exc:
            raise web.HTTPBadRequest(text=f"bad form: {exc}") from None
        files = [f for f in parts.files if f.name == "file"]
        if len(files) != 1:
            return _refused(400, "bad_form", "send exactly one file, in a part named file")
        try:
            image = await room.images.upload(member, files[0].data)
        except NotAllowed as exc:
            raise web.HTTPForbidden(text=str(exc)) from None
        except UploadRefused as exc:
            return _refused(503 if exc.code == "busy" else 400, exc.code, str(exc))
        except RecordError as exc:
            log.warning("%r: keeping an image failed: %s", room, exc.code)
            return _refused(503, exc.code, "the image could not be kept")
        out = ImageOut(
            id=image.id,
            kind=image.kind,
            mediaType=image.media_type,
            width=image.width,
            height=image.height,
            presets=list(image.presets),
            info=ImageInfoOut(**image.info) if image.info is not None else None,
        )
        return web.Response(text=out.model_dump_json(), status=201, content_type="application/json")

    async def image(self, request: web.Request) -> web.Response:
        room, member = await self._caller(request)
        image_id, preset = request.match_info["image"], request.match_info["preset"]
        if not _IMAGE.match(image_id) or not _PRESET.match(preset):
            raise web.HTTPNotFound(text="no such image")
        try:
            image, data = await room.images.read(member, image_id, preset)
        except (LookupError, RecordError):
            raise web.HTTPNotFound(text="no such image") from None
        return web.Response(
            body=data,
            content_type=image.media_type,
            headers={
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "sandbox; default-src 'none'",
                "Cross-Origin-Resource-Policy": "same-origin",
            },
        )


def _admitted(room: Room | None, grant: Grant) -> Member | None:
    if room is None:
        return None
    return next(
        (m for m in room.members.values() if m.admitted and m.grant.identity == grant.identity),
        None,
    )


def _refused(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        text=RefusedOut(error=code, message=message).model_dump_json(),
        status=status,
        content_type="application/json",
    )
