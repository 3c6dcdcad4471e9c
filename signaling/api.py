"""The recordings HTTP API: list, compose, play and download, each checked and audited.

Authorization is a join token of the same consultation whose role has ``view_recordings``
(the doctor and experts), as ``Authorization: Bearer <token>`` or, for a ``<video>``
element that cannot send headers, ``?token=``. Every listing, compose, playback and
download is written to the audit log with the caller's opaque identity.

Files are decrypted on the fly, one authenticated chunk at a time; nothing is written to
disk in plaintext. Composing runs in a separate process (decoding is CPU-heavy and must
not stall the media Worker's event loop); its progress is polled as a percentage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

from aiohttp import web

from recordings.catalog import Catalog
from recordings.errors import RecordingError
from recordings.store import COMPOSED_NAME, RecordingStore
from rooms.roles import Permission, can
from signaling.audit import AuditLog
from signaling.tokens import Grant, TokenError, verify

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
BASE = "/api/consultations/{consultation}/recordings"


@dataclass
class ComposeJob:
    process: mp.process.BaseProcess
    progress: Synchronized  # type: ignore[type-arg]
    error: Synchronized  # type: ignore[type-arg]

    @property
    def state(self) -> str:
        if self.process.is_alive():
            return "running"
        if self.process.exitcode == 0:
            return "done"
        return "failed"


def _compose_in_child(
    data_dir: str,
    consultation: str,
    recording: str,
    progress: Synchronized,  # type: ignore[type-arg]
    error: Synchronized,  # type: ignore[type-arg]
) -> None:
    from recordings.composer import compose

    def report(fraction: float) -> None:
        progress.value = fraction

    try:
        compose(RecordingStore(Path(data_dir)), consultation, recording, progress=report)
        progress.value = 1.0
    except Exception:
        logging.getLogger(__name__).exception("composing %s failed", recording)
        error.value = 1
        raise SystemExit(1) from None


class RecordingsApi:
    def __init__(self, store: RecordingStore, secret: bytes, audit: AuditLog) -> None:
        self.store = store
        self.catalog = Catalog(store)
        self.secret = secret
        self.audit = audit
        self.jobs: dict[tuple[str, str], ComposeJob] = {}
        self._mp = mp.get_context("spawn")

    def setup(self, app: web.Application) -> None:
        app.router.add_get(BASE, self.list)
        app.router.add_post(BASE + "/{recording}/compose", self.compose)
        app.router.add_get(BASE + "/{recording}/compose", self.compose_progress)
        app.router.add_get(BASE + "/{recording}/composed", self.composed)
        app.on_cleanup.append(self._stop_jobs)

    # ------------------------------------------------------------ auth

    def _authorize(self, request: web.Request) -> Grant:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        token = token or request.query.get("token", "")
        if not token:
            raise web.HTTPUnauthorized(text="a join token is required")
        try:
            grant = verify(self.secret, token)
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
        grant = self._authorize(request)
        infos = self.catalog.list(grant.consultation_id)
        self._audit("recordings_listed", grant)
        return web.json_response({"recordings": [info.__dict__ for info in infos]})

    async def compose(self, request: web.Request) -> web.Response:
        grant = self._authorize(request)
        recording = request.match_info["recording"]
        self._check_exists(grant.consultation_id, recording)
        key = (grant.consultation_id, recording)
        job = self.jobs.get(key)
        if job is None or job.state == "failed":
            progress, error = self._mp.Value("d", 0.0), self._mp.Value("i", 0)
            process = self._mp.Process(
                target=_compose_in_child,
                args=(str(self.store.data_dir), grant.consultation_id, recording, progress, error),
                daemon=True,
            )
            process.start()
            self.jobs[key] = job = ComposeJob(process, progress, error)
            self._audit("recording_compose", grant, recording=recording)
        return web.json_response(self._describe(job), status=202)

    async def compose_progress(self, request: web.Request) -> web.Response:
        grant = self._authorize(request)
        job = self.jobs.get((grant.consultation_id, request.match_info["recording"]))
        if job is None:
            raise web.HTTPNotFound(text="no compose job for this recording")
        return web.json_response(self._describe(job))

    async def composed(self, request: web.Request) -> web.StreamResponse:
        grant = self._authorize(request)
        recording = request.match_info["recording"]
        try:
            reader = self.catalog.open(grant.consultation_id, recording, COMPOSED_NAME)
        except (RecordingError, FileNotFoundError, ValueError) as exc:
            raise web.HTTPNotFound(text=f"no composed video: {exc}") from None
        with contextlib.closing(reader):
            size = reader.seek(0, 2)
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
            response.headers["Cache-Control"] = "no-store"
            response.content_length = end - start
            if ranged:
                response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            if download:
                response.headers["Content-Disposition"] = f'attachment; filename="{recording}.mp4"'
            await response.prepare(request)
            reader.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = await asyncio.to_thread(reader.read, min(READ_SIZE, remaining))
                if not chunk:
                    break
                await response.write(chunk)
                remaining -= len(chunk)
            await response.write_eof()
            return response

    # ------------------------------------------------------------ helpers

    def _check_exists(self, consultation: str, recording: str) -> None:
        if recording not in self.store.recordings(consultation):
            raise web.HTTPNotFound(text="no such recording")

    @staticmethod
    def _describe(job: ComposeJob) -> dict[str, object]:
        return {"state": job.state, "progress": round(job.progress.value * 100, 1)}

    async def _stop_jobs(self, app: web.Application) -> None:
        for job in self.jobs.values():
            if job.process.is_alive():
                job.process.terminate()


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
