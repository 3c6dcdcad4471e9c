"""Checking an audit log against its key and its checkpoints.

What each finding means:
- ``broken``: an entry's MAC fails. Someone without the key edited, forged or inserted it,
  or deleted the entry before it (the chain is then checked on from the entry as found, so
  one edit is one finding, not one per entry after it).
- ``malformed``: a line in the middle that is not an entry.
- ``torn``: the last line is incomplete (no newline, or not JSON): what a power cut leaves.
  ``AuditLog`` moves it aside at start-up.
- ``truncated``: the log ends before the last checkpoint's entry: its end was cut off.
- ``checkpoint_mismatch``: the log has another entry, or none, where a checkpoint says.
- ``bad_checkpoint``: a checkpoint line whose signature fails.
- ``unkeyed``: a log written by the previous, unkeyed version (rotated aside at start-up).

Findings name lines and sequence numbers only, never what a line holds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from signaling.audit.chain import (
    START,
    AuditKeys,
    Head,
    checkpoint_head,
    checkpoints_path,
    entry_head,
    entry_verifies,
    is_unkeyed,
    parse_line,
)

FindingKind = Literal[
    "broken",
    "malformed",
    "torn",
    "truncated",
    "checkpoint_mismatch",
    "bad_checkpoint",
    "unkeyed",
]
# A rewritten log can break on every line; past this many only the count is kept.
MAX_FINDINGS = 1000


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    file: str
    line: int | None
    detail: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{self.kind.upper()}: {where}: {self.detail}"


@dataclass(frozen=True)
class TornTail:
    """An incomplete last line: ``size`` bytes from ``offset``, line number ``line``."""

    path: Path
    offset: int
    size: int
    line: int


@dataclass
class AuditReport:
    entries: int = 0
    # The last entry as found: where a chain that carries on starts from.
    head: Head = START
    checkpoints: int = 0
    last_checkpoint: Head | None = None
    findings: list[Finding] = field(default_factory=list)
    findings_left_off: int = 0
    torn: list[TornTail] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def count(self) -> int:
        return len(self.findings) + self.findings_left_off

    def add(self, finding: Finding) -> None:
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(finding)
        else:
            self.findings_left_off += 1


def verify(log_path: Path, master_key: bytes) -> AuditReport:
    """Check ``log_path`` and the checkpoints next to it with the keys of ``master_key``."""
    return check(log_path, AuditKeys.derive(master_key))


def check(log_path: Path, keys: AuditKeys) -> AuditReport:
    report = AuditReport()
    checkpoints = _read_checkpoints(checkpoints_path(log_path), keys, report)
    matched: set[int] = set()  # indices into checkpoints
    by_seq: dict[int, list[int]] = {}
    for i, (head, _) in enumerate(checkpoints):
        by_seq.setdefault(head.seq, []).append(i)
    name = log_path.name
    last_seq = 0
    prev, last_good = START, None
    for number, raw, offset, is_last in _lines(log_path):
        entry = parse_line(raw) if raw.endswith(b"\n") else None
        if entry is None and is_last:
            _torn(report, TornTail(log_path, offset, len(raw), number))
            break
        if entry is not None and number == 1 and is_unkeyed(entry):
            report.add(Finding("unkeyed", name, None, "written by the previous, unkeyed version"))
            return report
        head = entry_head(entry) if entry is not None else None
        if entry is None or head is None:
            report.add(Finding("malformed", name, number, "not an audit entry"))
            continue
        report.entries += 1
        if entry_verifies(keys, prev, entry) or (
            last_good is not None and entry_verifies(keys, last_good, entry)
        ):
            last_good = None
        else:
            report.add(Finding("broken", name, number, _broken_detail(head, prev)))
            # Carry on from this entry, or from the last good one if the next entry fits that.
            last_good = last_good or prev
        prev = head
        last_seq = max(last_seq, head.seq)
        for i in by_seq.get(head.seq, ()):
            if checkpoints[i][0].mac == head.mac:
                matched.add(i)
    report.head = prev
    _check_checkpoints(log_path, checkpoints, matched, last_seq, report)
    return report


def _broken_detail(head: Head, prev: Head) -> str:
    if head.seq != prev.seq + 1:
        return (
            f"entry seq {head.seq} follows seq {prev.seq}: entries were deleted or inserted "
            "here, or this one was altered"
        )
    return f"entry seq {head.seq} fails authentication: edited, forged or inserted"


def _check_checkpoints(
    log_path: Path,
    checkpoints: list[tuple[Head, int]],
    matched: set[int],
    last_seq: int,
    report: AuditReport,
) -> None:
    name = checkpoints_path(log_path).name
    beyond = [i for i in range(len(checkpoints)) if checkpoints[i][0].seq > last_seq]
    if beyond:
        head, line = max((checkpoints[i] for i in beyond), key=lambda c: c[0].seq)
        report.add(
            Finding(
                "truncated",
                name,
                line,
                f"the log ends at seq {last_seq} but this checkpoint vouches for seq "
                f"{head.seq}: entries were cut off the end",
            )
        )
    for i, (head, line) in enumerate(checkpoints):
        if i not in matched and head.seq <= last_seq:
            report.add(
                Finding(
                    "checkpoint_mismatch",
                    name,
                    line,
                    f"the log's entry seq {head.seq} is not the one this checkpoint signed",
                )
            )


def _read_checkpoints(path: Path, keys: AuditKeys, report: AuditReport) -> list[tuple[Head, int]]:
    """Every checkpoint whose signature holds, with its line number."""
    out: list[tuple[Head, int]] = []
    for number, raw, offset, is_last in _lines(path):
        record = parse_line(raw) if raw.endswith(b"\n") else None
        if record is None and is_last:
            _torn(report, TornTail(path, offset, len(raw), number))
            break
        head = checkpoint_head(keys, record) if record is not None else None
        if head is None:
            report.add(Finding("bad_checkpoint", path.name, number, "signature fails"))
            continue
        out.append((head, number))
    report.checkpoints = len(out)
    if out:
        report.last_checkpoint = max((head for head, _ in out), key=lambda h: h.seq)
    return out


def _torn(report: AuditReport, tail: TornTail) -> None:
    report.torn.append(tail)
    detail = f"incomplete last line ({tail.size} bytes)"
    report.add(Finding("torn", tail.path.name, tail.line, detail))


def _lines(path: Path) -> Iterator[tuple[int, bytes, int, bool]]:
    """(line number, bytes, offset, whether it is the last) of a file as it was when opened.

    Stops at the size found at opening, so a line a writer is appending meanwhile is not
    mistaken for a torn one.
    """
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    with f:
        size = os.fstat(f.fileno()).st_size
        offset, number = 0, 0
        while offset < size:
            raw = f.readline(size - offset)
            if not raw:
                return
            number += 1
            yield number, raw, offset, offset + len(raw) >= size
            offset += len(raw)
