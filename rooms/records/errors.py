"""Typed errors of the records repositories.

Messages name opaque ids and field names only: never a display name, a username typed at a
login, a password or a token, so any of them may be shown to the caller or logged.

``code`` is a short, stable word the consoles translate and the JSON API returns; a raise
may give a more precise one (``Forbidden("...", code="no_partnership")``).
"""

from __future__ import annotations


class RecordError(Exception):
    """Base of every refusal by a records repository."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class NotFound(RecordError):
    """No such record (or none the caller may see: both look the same from outside)."""

    code = "not_found"


class Duplicate(RecordError):
    """A record with this unique value exists already."""

    code = "duplicate"


class Forbidden(RecordError):
    """The caller may not do this (another site's record, a role without the right)."""

    code = "forbidden"


class InvalidInput(RecordError):
    """A value out of its allowed form or range; the message says which field and why."""

    code = "invalid"


class Conflict(RecordError):
    """The record changed under the caller: another expert took the request first, a newer
    version of an opinion was filed meanwhile. Reload and decide again."""

    code = "conflict"
