"""Log hygiene: no join token and no client-made line break ever reaches a log.

Tokens travel in join URLs (in any spelling a client cares to send: ``/JOIN/<t>``,
``//join/<t>``, ``?Token=``, ``;token=``, a path segment of the API), in Referer headers
and, by mistake, anywhere else. Rather than chase spellings, everything shaped like a JWT
is masked wherever it appears. A JWT's payload carries the display name, so a header or
payload alone (a truncated token) is masked too.

Clients also choose text that ends up in log messages (ICE candidates, SDP, headers): every
control character is escaped, so nobody can end a line and forge the next one, or send
terminal escape sequences to whoever reads the log.

Two layers, so neither depends on the other: ``SafeAccessLogger`` cleans aiohttp's access
lines (message and structured ``extra`` fields), and ``install`` puts ``LogSafetyFilter``
on the root handlers (``teleconsult serve`` does), which cleans every record.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

from aiohttp import web

MASK = "<token>"

_B64 = "[A-Za-z0-9_-]"
# A dot, or one percent-encoded by a client or a proxy.
_DOT = r"(?:\.|%2[Ee])"
_JWT = re.compile(
    # base64url of '{"': a JWT header or payload, alone or with the rest of the token.
    rf"eyJ{_B64}{{4,}}(?:{_DOT}{_B64}*)*"
    # Three (or, for JWE, five) long base64url parts, whatever the JSON starts with. Ten
    # characters each: host names and dotted module paths rarely have three such labels.
    rf"|{_B64}{{10,}}{_DOT}{_B64}{{10,}}{_DOT}{_B64}{{10,}}(?:{_DOT}{_B64}+)*"
)

_ESCAPES: dict[int, str] = {
    # C0, DEL and C1 controls (C1 has NEL, a line break, and CSI, an escape sequence).
    **{c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))},
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    # Unicode line and paragraph separators, and the bidi overrides that make a line
    # display differently from what it holds.
    **{c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))},
}
# Continuation lines of a record (a traceback) are indented, so a line at the margin
# always starts a record.
_CONTINUATION = "  "


def mask_tokens(text: str) -> str:
    return _JWT.sub(MASK, text)


def escape_controls(text: str) -> str:
    return text.translate(_ESCAPES)


def clean(text: str) -> str:
    """One log line's worth of text: tokens masked, control characters escaped."""
    return escape_controls(mask_tokens(text))


def clean_block(text: str) -> str:
    """A traceback or stack: its own line breaks kept, every line indented and cleaned."""
    return "\n".join(_CONTINUATION + clean(line) for line in text.split("\n"))


class LogSafetyFilter(logging.Filter):
    """Cleans a record in place: message, traceback and stack. Never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # A bad format call must not raise into the code that logged.
            message = f"{record.msg!r} (could not be formatted with its arguments)"
        record.msg, record.args = clean(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and not record.exc_text.startswith(_CONTINUATION):
            record.exc_text = clean_block(record.exc_text)
        if record.stack_info and not record.stack_info.startswith(_CONTINUATION):
            record.stack_info = clean_block(record.stack_info)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Put a LogSafetyFilter on every handler of ``logger`` (the root logger by default).

    On the handlers, not the logger: a logger's filters do not see records propagated from
    its children, and every record of the process passes the root handlers.
    """
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, LogSafetyFilter) for f in handler.filters):
            handler.addFilter(LogSafetyFilter())


class _Cleaning(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = kwargs.get("extra")
        if isinstance(extra, Mapping):
            kwargs["extra"] = {key: _clean_value(value) for key, value in extra.items()}
        return clean(str(msg)), kwargs


def _clean_value(value: object) -> object:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, Mapping):
        return {key: _clean_value(v) for key, v in value.items()}
    return value


class SafeAccessLogger(web.AccessLogger):
    """aiohttp's access log, each line and its structured fields cleaned."""

    def __init__(self, logger: logging.Logger, log_format: str = web.AccessLogger.LOG_FORMAT):
        super().__init__(_Cleaning(logger, {}), log_format)  # type: ignore[arg-type]
