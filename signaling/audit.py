"""The audit log: every sensitive action, append-only, in a hash chain that shows tampering.

One JSON object per line. Each carries the SHA-256 of the line before it (``prev``) and its
own (``hash``, over the line without that field), so editing, deleting or reordering any
line breaks the chain from there on; ``verify`` says where. Entries name people by their
opaque identity and per-session participant id, never by display name.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._prev = self._last_hash()

    def _last_hash(self) -> str:
        if not self.path.exists():
            return GENESIS
        last = GENESIS
        with self.path.open("rb") as f:
            for line in f:
                if line.strip():
                    last = json.loads(line)["hash"]
        return last

    def record(self, action: str, **fields: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {"at": round(time.time(), 3), "action": action, **fields}
        entry["prev"] = self._prev
        entry["hash"] = _digest(entry)
        line = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        self._prev = entry["hash"]
        return entry

    def entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def verify(path: Path) -> int | None:
    """The 1-based number of the first line that breaks the chain, or None if intact."""
    prev = GENESIS
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                claimed = entry["hash"]
            except (ValueError, KeyError, TypeError):
                return number
            if entry.get("prev") != prev or _digest(entry) != claimed:
                return number
            prev = claimed
    return None


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
