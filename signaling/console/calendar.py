"""An appointment as an iCalendar file (RFC 5545), written by hand: one VEVENT.

Times are UTC; the UID is the appointment's opaque id, and SEQUENCE its sequence, so a
calendar that imported the old time replaces it when the rescheduled file is imported. The
SUMMARY names the kind of consultation and the expert department, never the patient.
"""

from __future__ import annotations

from datetime import UTC, datetime

from rooms.records.scheduling import Appointment

_LINE_OCTETS = 75


def _utc(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _text(value: str) -> str:
    """A TEXT value: backslash, semicolon, comma and line breaks escaped (RFC 5545 3.3.11)."""
    return (
        value.replace("\\", "\\\\")
        .replace(";", "\\;")
        .replace(",", "\\,")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
        .replace("\r", "\\n")
    )


def _fold(line: str) -> str:
    """Lines of at most 75 octets, continued with CRLF and a space (never inside a
    character: UTF-8 sequences stay whole)."""
    data = line.encode("utf-8")
    if len(data) <= _LINE_OCTETS:
        return line
    parts: list[str] = []
    start, limit = 0, _LINE_OCTETS
    while start < len(data):
        end = min(start + limit, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:
            end -= 1
        parts.append(data[start:end].decode("utf-8"))
        start, limit = end, _LINE_OCTETS - 1
    return "\r\n ".join(parts)


def appointment_ics(
    appointment: Appointment, *, summary: str, description: str, url: str, now: datetime
) -> str:
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//teleconsult//front desk//EN",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        "BEGIN:VEVENT",
        f"UID:{appointment.id}@teleconsult",
        f"DTSTAMP:{_utc(now)}",
        f"DTSTART:{_utc(appointment.starts_at)}",
        f"DTEND:{_utc(appointment.ends_at)}",
        f"SEQUENCE:{appointment.sequence}",
        f"SUMMARY:{_text(summary)}",
        f"DESCRIPTION:{_text(description)}",
        f"URL:{url}",
        "STATUS:CONFIRMED",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "".join(_fold(line) + "\r\n" for line in lines)
