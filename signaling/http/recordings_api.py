"""The recordings HTTP API: list, compose, play and download, each checked and audited.

Authorization is a join token of the same consultation whose role has ``view_recordings``
(the doctor and experts), as ``Authorization: Bearer <token>`` or, for a ``<video>``
element that cannot send headers, ``?token=``. Every listing, compose, playback and
download is written to the audit log with the caller's opaque identity.

Files are decrypted on the fly, one authenticated chunk at a time; nothing is written to
disk in plaintext. Composing runs in a separate process (signaling/http/composing.py: one per
recording, a few per server, 429 with Retry-After beyond); its progress is polled as a
percentage. Reading keys, manifests and files runs in threads: this event loop also
forwards media.

Every response is ``Cache-Control: no-store`` (it is about a patient's recordings), and no
error body names a server path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Literal

from aiohttp import web
from pydantic import BaseModel

from recordings.catalog import Catalog, RecordingInfo
from recordings.errors import RecordingError
from recordings.store import COMPOSED_NAME, RecordingStore
from rooms.roles import Permission, can
from signaling.audit.log import AuditLog
from signaling.http import openapi
from signaling.http.composing import ComposeJob, ComposeRefused, Composers
from signaling.http.openapi import Content, Operation, Query
from signaling.room.revocation import RevocationGuard
from signaling.tokens import Grant, TokenError, verify

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
PREFIX = "/api/"
BASE = PREFIX + "consultations/{consultation}/recordings"
# What a caller learns of an unreadable recording: the details (file names, the key
# concerned) are for the operator's ``teleconsult recordings verify``.
UNREADABLE = "this recording cannot be read (damaged, or its key was destroyed)"


class RecordingOut(BaseModel):
    """One recording of the consultation."""

    consultation: str
    recording: str
    # complete | recording (running, or its Worker died) | stopped_disk_full | failed |
    # unreadable (see ``error``)
    state: str
    started_at: float | None
    stopped_at: float | None
    truncated: bool
    tracks: int
    participants: int
    composed: bool
    composed_duration_s: float | None
    error: str | None


class RecordingList(BaseModel):
    """The consultation's recordings, oldest first."""

    recordings: list[RecordingOut]


class ComposeJobOut(BaseModel):
    """A compose job: running, done (the composed video is ready) or failed."""

    state: Literal["running", "done", "failed"]
    progress: float


_TEXT = Content("text/plain", "Why not (no server path, no name)")
_AUTH = ("joinToken",)
_ERRORS = {401: _TEXT, 403: _TEXT, 404: _TEXT}


class RecordingsApi:
    def __init__(
        self,
        store: RecordingStore,
        secret: bytes,
        audit: AuditLog,
        composers: Composers,
        revocation: RevocationGuard,
    ) -> None:
        self.store = store
        self.catalog = Catalog(store)
        self.secret = secret
        self.audit = audit
        self.composers = composers
        self.revocation = revocation

    def setup(self, app: web.Application) -> None:
        api = openapi.routes(app)
        tag = "recordings"
        api.add(
            app,
            Operation(
                "GET",
                BASE,
                "The consultation's recordings",
                {200: RecordingList, **_ERRORS},
                security=_AUTH,
                tag=tag,
            ),
            self.list,
        )
        api.add(
            app,
            Operation(
                "POST",
                BASE + "/{recording}/compose",
                "Compose the recording into one video (a process of its own)",
                {
                    202: ComposeJobOut,
                    **_ERRORS,
                    429: Content("text/plain", "Busy, or failed lately: see Retry-After"),
                    503: _TEXT,
                },
                security=_AUTH,
                tag=tag,
                description="Asking again returns the running or finished job. A "
                "recording_ready webhook follows when it is done.",
            ),
            self.compose,
        )
        api.add(
            app,
            Operation(
                "GET",
                BASE + "/{recording}/compose",
                "The compose job's progress",
                {200: ComposeJobOut, **_ERRORS},
                security=_AUTH,
                tag=tag,
            ),
            self.compose_progress,
        )
        api.add(
            app,
            Operation(
                "GET",
                BASE + "/{recording}/composed",
                "Play or download the composed video (decrypted on the fly; Range works)",
                {
                    200: Content("video/mp4", "The whole video", binary=True),
                    206: Content("video/mp4", "The range asked for", binary=True),
                    **_ERRORS,
                    416: _TEXT,
                },
                security=(*_AUTH, "joinTokenQuery"),
                query=(Query("download", "1: as an attachment, audited as a download"),),
                tag=tag,
            ),
            self.composed,
        )
        app.on_response_prepare.append(_no_store)
        app.on_cleanup.append(self._stop_jobs)

    # ------------------------------------------------------------ auth

    async def _authorize(self, request: web.Request) -> Grant:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        token = token or request.query.get("token", "")
        if not token:
            raise web.HTTPUnauthorized(text="a join token is required")
        try:
            grant = verify(self.secret, token)
            # A removed person or a withdrawn link sees no recordings; an ended consultation
            # is exactly when its doctor looks at them.
            await self.revocation.check(grant, allow_ended=True)
        except TokenError as exc:
            raise web.HTTPUnauthorized(text=str(exc)) from None
        if grant.consultation_id != request.match_info["consultation"]:
            raise web.HTTPForbidden(text="this token is for another consultation")
        if not can(grant.role, Permission.view_recordings):
            raise web.HTTPForbidden(text=f"role {grant.role} may not see recordings")
        return grant

    def _audit(self, action: str, grant: Grant, **fields: object) -> None:
        self.audit.record(
            action,
            consultation=grant.consultation_id,
            identity=grant.identity,
            role=str(grant.role),
            **fields,
        )

    # ------------------------------------------------------------ handlers

    async def list(self, request: web.Request) -> web.Response:
        grant = await self._authorize(request)
        infos = await asyncio.to_thread(self.catalog.list, grant.consultation_id)
        self._audit("recordings_listed", grant)
        return _json(RecordingList(recordings=[_public(info) for info in infos]))

    async def compose(self, request: web.Request) -> web.Response:
        grant = await self._authorize(request)
        recording = request.match_info["recording"]
        await self._check_exists(grant.consultation_id, recording)
        try:
            job, started = await self.composers.start(grant.consultation_id, recording)
        except ComposeRefused as exc:
            raise web.HTTPTooManyRequests(
                text=str(exc), headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
            ) from None
        except OSError:
            log.exception("could not start a composer process")
            raise web.HTTPServiceUnavailable(text="composing could not be started") from None
        if started:
            self._audit("recording_compose", grant, recording=recording)
        return _json(_describe(job), status=202)

    async def compose_progress(self, request: web.Request) -> web.Response:
        grant = await self._authorize(request)
        job = self.composers.get(grant.consultation_id, request.match_info["recording"])
        if job is None:
            raise web.HTTPNotFound(text="no compose job for this recording")
        return _json(_describe(job))

    async def composed(self, request: web.Request) -> web.StreamResponse:
        grant = await self._authorize(request)
        recording = request.match_info["recording"]
        try:
            reader = await asyncio.to_thread(
                self.catalog.open, grant.consultation_id, recording, COMPOSED_NAME
            )
        except (RecordingError, FileNotFoundError, ValueError):
            # The exception names files on the server: not for the caller.
            raise web.HTTPNotFound(text="no composed video for this recording") from None
        with contextlib.closing(reader):
            size = await asyncio.to_thread(reader.seek, 0, 2)
            ranged = request.headers.get("Range") is not None
            start, end = _byte_range(request.headers.get("Range"), size)
            download = request.query.get("download") == "1"
            self._audit(
                "recording_downloaded" if download else "recording_played",
                grant,
                recording=recording,
                range=[start, end],
            )
            response = web.StreamResponse(status=206 if ranged else 200)
            response.content_type = "video/mp4"
            response.headers["Accept-Ranges"] = "bytes"
            response.content_length = end - start
            if ranged:
                response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            if download:
                response.headers["Content-Disposition"] = f'attachment; filename="{recording}.mp4"'
            try:
                await response.prepare(request)
                await asyncio.to_thread(reader.seek, start)
                remaining = end - start
                while remaining > 0:
                    chunk = await asyncio.to_thread(reader.read, min(READ_SIZE, remaining))
                    if not chunk:
                        break
                    await response.write(chunk)
                    remaining -= len(chunk)
                await response.write_eof()
            except ConnectionError:
                # A player seeking, or someone closing the tab: ordinary, not a fault.
                log.info("recording %s: the client left before the end of its response", recording)
            return response

    # ------------------------------------------------------------ helpers

    async def _check_exists(self, consultation: str, recording: str) -> None:
        if recording not in await asyncio.to_thread(self.store.recordings, consultation):
            raise web.HTTPNotFound(text="no such recording")

    async def _stop_jobs(self, app: web.Application) -> None:
        await self.composers.stop()


def _json(answer: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=answer.model_dump_json(), status=status, content_type="application/json"
    )


def _describe(job: ComposeJob) -> ComposeJobOut:
    return ComposeJobOut(state=job.state, progress=round(job.progress * 100, 1))  # type: ignore[arg-type]


def _public(info: RecordingInfo) -> RecordingOut:
    fields = dict(info.__dict__)
    if fields["error"] is not None:
        fields["error"] = UNREADABLE
    return RecordingOut(**fields)


async def _no_store(request: web.Request, response: web.StreamResponse) -> None:
    # Every API answer (errors too) is about a patient's recordings: no cache keeps one.
    if request.path.startswith(PREFIX):
        response.headers["Cache-Control"] = "no-store"


def _byte_range(header: str | None, size: int) -> tuple[int, int]:
    """[start, end) for a single ``bytes=`` range; the whole file otherwise."""
    if not header or not header.startswith("bytes="):
        return 0, size
    first, _, last = header[6:].split(",")[0].strip().partition("-")
    try:
        if first == "":
            start, end = max(0, size - int(last)), size
        else:
            start = int(first)
            end = min(size, int(last) + 1) if last else size
    except ValueError:
        raise _unsatisfiable(size) from None
    if start >= size or start >= end:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> web.HTTPRequestRangeNotSatisfiable:
    return web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
