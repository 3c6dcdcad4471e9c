"""Log hygiene: JWT-shaped strings masked, control characters escaped, in every record."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from signaling.http.logsafe import LogSafetyFilter, SafeAccessLogger, clean, install, mask_tokens
from signaling.tokens import mint

NAME = "Zhao Meiling"
TOKEN = mint(
    b"k" * 32,
    consultation_id="c-123456",
    kind="joint",
    identity="u-1",
    name=NAME,
    role="doctor",
    ttl_s=60,
)
HEAD, PAYLOAD, SIGNATURE = TOKEN.split(".")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@pytest.mark.parametrize(
    "line",
    [
        f'"GET /JOIN/{TOKEN} HTTP/1.1"',
        f'"GET //join/{TOKEN} HTTP/1.1"',
        f'"GET /join/x?Token={TOKEN}&lang=en HTTP/1.1"',
        f'"GET /join/x;token={TOKEN} HTTP/1.1"',
        f'"GET /api/consultations/{TOKEN}/recordings HTTP/1.1"',
        f"Referer: https://clinic.example.org/join/{TOKEN}",
        TOKEN.replace(".", "%2E"),
        f"{HEAD}.{PAYLOAD}",  # cut short: the payload alone carries the name
        PAYLOAD,
    ],
)
def test_every_spelling_is_masked(line: str) -> None:
    masked = mask_tokens(line)
    assert PAYLOAD not in masked and SIGNATURE not in masked
    assert "<token>" in masked


def test_jwt_shaped_without_eyj_is_masked() -> None:
    # A JWT whose JSON starts with a space or a BOM does not begin with eyJ.
    shaped = "ICJhbGciOiJIUzI1NiJ9IA.IHsic3ViIjoidS0xIn0g.c2lnbmF0dXJlLWJ5dGVz"
    assert mask_tokens(f"/join/{shaped}") == "/join/<token>"


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1",
        "teleconsult.example.org",
        "signaling.recordings.composer",
        "R20261124T101010Z-abcdef",
        "composed.mp4.enc",
        "aiohttp/3.14.5",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert mask_tokens(text) == text


def test_control_characters_are_escaped() -> None:
    assert clean("a\nb\r\x1b[2J\x00\x7f\x85\u2028\u2029\u202e\tz") == (
        "a\\nb\\r\\x1b[2J\\x00\\x7f\\x85\\u2028\\u2029\\u202e\\tz"
    )
    assert clean("ünïcødé and 中文 stay") == "ünïcødé and 中文 stay"


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger with its own handler, filtered as ``serve`` filters the root handlers."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger("test.logsafe")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    install(logger)
    install(logger)  # twice: still one filter
    assert sum(isinstance(f, LogSafetyFilter) for f in handler.filters) == 1
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)


def _assert_no_forged_line(text: str) -> None:
    for line in text.splitlines():
        # A line at the margin starts a record; anything else is indented.
        assert line[:4].isdigit() or line.startswith("  "), repr(line)


def test_a_candidate_cannot_forge_a_line(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = logged
    candidate = "candidate:1 1 udp 1 10.0.0.1 9 typ host\n2026-01-01 INFO x: forged\x1b[31m"
    logger.info("bad candidate from %s: %s", "P1234", candidate)
    text = out.getvalue()
    assert text.count("\n") == 1
    assert "\x1b" not in text and "\\x1b[31m" in text and "\\n2026-01-01 INFO" in text


def test_tracebacks_keep_their_shape_but_are_cleaned(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = logged
    try:
        raise ValueError(f"rejected {TOKEN}\n2026-01-01 00:00:00,000 ERROR x: forged\x1b[2J")
    except ValueError:
        logger.exception("handling %s failed", f"/join/{TOKEN}")
    text = out.getvalue()
    assert PAYLOAD not in text and "\x1b" not in text
    assert "Traceback (most recent call last):" in text
    _assert_no_forged_line(text)


def test_a_bad_format_call_does_not_raise(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = logged
    logger.info("two %s %s", "but one")
    assert "could not be formatted" in out.getvalue()


async def test_access_logger_cleans_the_line_and_its_fields() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("test.logsafe.access")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(Keep())
    server = TestServer(web.Application(), host="127.0.0.1")
    await server.start_server(
        access_log_class=SafeAccessLogger,
        access_log=logger,
        access_log_format='%a "%r" %s "%{Referer}i" "%{User-Agent}i"',
    )
    try:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(
            f"GET /JOIN/{TOKEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Referer: https://x/join/{TOKEN}\r\nUser-Agent: {TOKEN}\r\n\r\n".encode()
        )
        await writer.drain()
        async with asyncio.timeout(10):
            await reader.read()
            while not records:
                await asyncio.sleep(0.01)
        writer.close()
    finally:
        await server.close()
    (record,) = records
    message = record.getMessage()
    assert PAYLOAD not in message
    assert message.count("<token>") == 3
    # Structured fields (for JSON log formatters) are cleaned too.
    assert PAYLOAD not in repr(record.__dict__)
