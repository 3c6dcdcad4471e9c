"""Console form bodies: ``multipart/form-data`` parsed from the bytes already read, and the
larger body limit for the two forms that carry files.

Every request body is read whole before any handler runs (the connection guard, under its
deadline), so aiohttp's streaming ``request.post()`` finds nothing left to read on a
multipart body (it failed with a 500), and would spool file parts to temporary files in
plaintext. ``form(request)`` parses the bytes in memory instead: exact for binary parts, at
most 16 parts, text fields at most 64 KiB.

Uploads: the app's body limit is 256 KiB. ``upload_middleware`` runs before the guard for
the upload forms only: it wants a Content-Length of at most 20 MiB (and a bit for the other
fields), refuses it at once otherwise (413, before reading a byte), checks the staff
session cookie (401 without one), and then reads the body under a deadline that grows
with its size (30 s plus 256 kbit/s), so a clinic on a slow uplink can send a large file
while nobody without a session can hold a connection that long.
"""

from __future__ import annotations

import asyncio
import email.message
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote

from aiohttp import web
from aiohttp.multipart import (
    BadContentDispositionHeader,
    content_disposition_filename,
    parse_content_disposition,
)
from multidict import MultiDict, MultiDictProxy

from signaling.console.attachments import MAX_FILE_BYTES
from signaling.http.guard import GUARD

if TYPE_CHECKING:
    from signaling.console.sessions import StaffSessions

MAX_PARTS = 16
MAX_TEXT_FIELD = 64 * 1024
MAX_PART_HEADERS = 8 * 1024
# One file at the limit, plus the form's other fields and the multipart framing.
MAX_UPLOAD_BODY = MAX_FILE_BYTES + 256 * 1024
UPLOAD_BASE_S = 30.0
UPLOAD_MIN_BYTES_PER_S = 32 * 1024
# Bodies larger than this are parsed in a thread, off the event loop.
_PARSE_IN_THREAD = 1024 * 1024
_UPLOAD_PATHS = re.compile(r"^/console/(requests|consultations/[A-Za-z0-9_-]{6,64}/attachments)$")
_FORM: web.RequestKey[Form] = web.RequestKey("tc_console_form")


class BadForm(ValueError):
    """A body that is not a well-formed form; the message names no content."""


@dataclass(frozen=True)
class FilePart:
    name: str
    filename: str = field(repr=False)
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Form:
    fields: MultiDictProxy[str]
    files: tuple[FilePart, ...] = ()

    def get(self, name: str, limit: int = 1024) -> str:
        value = self.fields.get(name)
        return value[:limit] if isinstance(value, str) else ""

    def getall(self, name: str, limit: int = 1024) -> list[str]:
        return [v[:limit] for v in self.fields.getall(name, [])]


def is_upload(request: web.BaseRequest) -> bool:
    return request.method == "POST" and _UPLOAD_PATHS.match(request.path) is not None


def parse_multipart(body: bytes, content_type: str) -> Form:
    header = email.message.Message()
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not 0 < len(boundary) <= 70:
        raise BadForm("no multipart boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    start = body.find(delimiter)
    if start < 0:
        raise BadForm("the body does not start a part")
    fields: MultiDict[str] = MultiDict()
    files: list[FilePart] = []
    position = start + len(delimiter)
    while True:
        if body.startswith(b"--", position):
            break  # the closing delimiter
        if not body.startswith(b"\r\n", position):
            raise BadForm("a part delimiter is not followed by a line break")
        position += 2
        end = body.find(b"\r\n" + delimiter, position)
        if end < 0:
            raise BadForm("a part has no end")
        if len(fields) + len(files) >= MAX_PARTS:
            raise BadForm(f"more than {MAX_PARTS} parts")
        head_end = body.find(b"\r\n\r\n", position, min(end + 2, position + MAX_PART_HEADERS))
        if head_end < 0:
            raise BadForm("a part's headers do not end")
        name, filename = _disposition(body[position:head_end])
        content = body[head_end + 4 : end]
        if filename is not None:
            files.append(FilePart(name, filename, content))
        else:
            if len(content) > MAX_TEXT_FIELD:
                raise BadForm("a text field is too long")
            try:
                fields.add(name, content.decode("utf-8"))
            except UnicodeDecodeError:
                raise BadForm("a text field is not UTF-8") from None
        position = end + 2 + len(delimiter)
    return Form(MultiDictProxy(fields), tuple(files))


def _disposition(head: bytes) -> tuple[str, str | None]:
    # Browsers send names raw in UTF-8 (only CR, LF and '"' percent-encoded); other clients
    # percent-encode them all. A file name is only ever shown, so both are decoded.
    for line in head.decode("utf-8", errors="replace").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() != "content-disposition":
            continue
        try:
            kind, params = parse_content_disposition(value.strip())
        except (BadContentDispositionHeader, ValueError):
            raise BadForm("a part's Content-Disposition cannot be read") from None
        name = params.get("name")
        if kind != "form-data" or not name:
            raise BadForm("a part is not a named form field")
        if "filename" in params or "filename*" in params:
            return name, unquote(content_disposition_filename(params, "filename") or "")
        return name, None
    raise BadForm("a part has no Content-Disposition")


async def form(request: web.Request) -> Form:
    """The request's form (url-encoded or multipart), parsed once and kept on the request.
    Raises web.HTTPBadRequest for a body that is not one."""
    if _FORM in request:
        return request[_FORM]
    if request.content_type == "multipart/form-data":
        body = await request.read()
        content_type = request.headers.get("Content-Type", "")
        try:
            if len(body) > _PARSE_IN_THREAD:
                parsed = await asyncio.to_thread(parse_multipart, body, content_type)
            else:
                parsed = parse_multipart(body, content_type)
        except BadForm as exc:
            raise web.HTTPBadRequest(text=f"bad form: {exc}") from None
    else:
        posted = await request.post()
        parsed = Form(
            MultiDictProxy(MultiDict((k, v) for k, v in posted.items() if isinstance(v, str)))
        )
    request[_FORM] = parsed
    return parsed


def upload_middleware(sessions: StaffSessions) -> web.Middleware:
    """Goes before the connection guard's (see the module's docstring)."""

    async def logged_in(request: web.Request) -> None:
        if await sessions.peek(request) is None:
            raise web.HTTPUnauthorized(text="log in first")

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not is_upload(request):
            return await handler(request)
        return await read_upload(request, handler, MAX_UPLOAD_BODY, logged_in)

    return middleware


async def read_upload(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    max_body: int,
    authorize: Callable[[web.Request], Awaitable[object]],
) -> web.StreamResponse:
    """An upload larger than the app's body limit, for a middleware before the guard's: a
    Content-Length of at most ``max_body`` and ``authorize`` (which raises an HTTP error)
    both checked before a byte is read, then the body read under a deadline that grows with
    its size, then ``handler`` with it."""
    # The headers are complete: the guard's header deadline no longer applies.
    request.app[GUARD].request_started(request)
    length = request.content_length
    if length is None:
        raise _closing(web.HTTPLengthRequired(text="an upload needs a Content-Length"))
    if length > max_body:
        raise _closing(web.HTTPRequestEntityTooLarge(max_size=max_body, actual_size=length))
    try:
        await authorize(request)
    except web.HTTPException as exc:
        raise _closing(exc) from None
    larger = request.clone(client_max_size=max_body)
    try:
        async with asyncio.timeout(UPLOAD_BASE_S + length / UPLOAD_MIN_BYTES_PER_S):
            await larger.read()
    except TimeoutError:
        raise _closing(web.HTTPRequestTimeout(text="the upload did not arrive in time")) from None
    return await handler(larger)


def _closing(response: web.HTTPException) -> web.HTTPException:
    # The body was not read: the connection cannot carry another request.
    response.force_close()
    return response
