"""What start-up does to an audit log it cannot carry on as is, without losing a byte.

- A torn last line (a power cut mid-write) is copied to a file named for the time and cut
  off the log, which then ends on a whole entry.
- A log of the previous, unkeyed version (SHA-256 chained, ``prev``/``hash``) is renamed
  aside whole; the keyed chain starts afresh and its first entry names that file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signaling.audit.chain import GENESIS, canonical, is_unkeyed, parse_line
from signaling.audit.verify import TornTail


@dataclass(frozen=True)
class Rotated:
    """An unkeyed log renamed aside, and what anchors it."""

    path: Path
    entries: int
    last_hash: str
    # The first line whose SHA-256 chain fails, or None if it was intact when rotated.
    first_break: int | None


def move_aside(tail: TornTail) -> Path:
    """Copy the torn tail to its own file, then cut it off the log; return that file."""
    # Written and synced before the log is cut: a crash in between duplicates, never loses.
    aside, fd = _create_aside(tail.path, "torn")
    with tail.path.open("rb") as source, os.fdopen(fd, "wb") as target:
        source.seek(tail.offset)
        shutil.copyfileobj(source, target)
        target.flush()
        os.fsync(target.fileno())
    fd = os.open(tail.path, os.O_WRONLY)
    try:
        os.ftruncate(fd, tail.offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return aside


def rotate_unkeyed(path: Path) -> Rotated | None:
    """Rename a log of the previous version aside; None if ``path`` is not one."""
    try:
        with path.open("rb") as f:
            first = parse_line(f.readline())
    except FileNotFoundError:
        return None
    if first is None or not is_unkeyed(first):
        return None
    entries, last_hash, first_break = _check_unkeyed(path)
    aside, fd = _create_aside(path, "unkeyed")
    os.close(fd)
    os.replace(path, aside)
    return Rotated(aside, entries, last_hash, first_break)


def _check_unkeyed(path: Path) -> tuple[int, str, int | None]:
    """The previous version's own check: each line's SHA-256 and its link to the one before."""
    entries, prev, first_break = 0, GENESIS, None
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            entry = parse_line(raw)
            claimed = entry.get("hash") if entry is not None else None
            if entry is None or not isinstance(claimed, str):
                first_break = first_break or number
                continue
            entries += 1
            if entry.get("prev") != prev or _unkeyed_digest(entry) != claimed:
                first_break = first_break or number
            prev = claimed
    return entries, prev, first_break


def _unkeyed_digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    try:
        return hashlib.sha256(canonical(body)).hexdigest()
    except (TypeError, ValueError):
        return ""


def _create_aside(path: Path, label: str) -> tuple[Path, int]:
    """A new 0600 file next to ``path``, named for the time (and a counter if taken)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1, 1000):
        suffix = "" if n == 1 else f"-{n}"
        aside = path.with_name(f"{path.name}.{label}-{stamp}{suffix}")
        try:
            return aside, os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
    raise FileExistsError(f"{path}: no free name to move a file aside")
