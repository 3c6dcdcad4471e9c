"""The audit log: every sensitive action, append-only, in a keyed chain that shows tampering.

One JSON object per line with a sequence number and an HMAC chained on the previous line's
(signaling/audit/chain.py), so an edit, a deletion, an insertion or a forged line fails
``teleconsult audit verify`` (signaling/audit/verify.py) without the master key; signed
checkpoints of the head, in a file of their own, show a cut-off end. Entries name people by
their opaque identity and per-session participant id, never by display name.

Start-up never refuses to serve over the log: a torn last line is moved aside, a log of the
previous version is rotated aside, and a chain found broken is logged, recorded as an entry
and carried on from its last entry. Stopping a clinic is not a tamperer's prize.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recordings.crypto import load_or_create_master_key
from signaling.audit.chain import RESERVED, AuditKeys, Head, seal_entry
from signaling.audit.recovery import Rotated, move_aside, rotate_unkeyed
from signaling.audit.verify import AuditReport, check
from signaling.audit.writer import AuditWriter, Sealed

log = logging.getLogger(__name__)

LOG_FILE = "audit.log"
CHECKPOINT_EVERY = 100
CHECKPOINT_INTERVAL_S = 60.0
# How many findings an ``audit_chain_broken`` entry lists (it counts them all).
_FINDINGS_LISTED = 20


def log_path(data_dir: Path) -> Path:
    return Path(data_dir) / LOG_FILE


class AuditLog:
    def __init__(
        self,
        path: Path,
        master_key: bytes,
        *,
        checkpoint_every: int = CHECKPOINT_EVERY,
        checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S,
    ) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._keys = AuditKeys.derive(master_key)
        self._lock = threading.Lock()
        rotated = rotate_unkeyed(path)
        report = check(path, self._keys)
        moved = [(tail, move_aside(tail)) for tail in report.torn]
        self._head = report.head
        self._writer = AuditWriter(
            path,
            self._keys,
            report.head,
            report.last_checkpoint,
            every=checkpoint_every,
            interval_s=checkpoint_interval_s,
        )
        if rotated is not None:
            self._record_rotated(rotated)
        for tail, aside in moved:
            log.warning(
                "audit log: moved the incomplete last line of %s (line %d, %d bytes) aside to %s",
                tail.path.name,
                tail.line,
                tail.size,
                aside.name,
            )
            self.record(
                "audit_recovered",
                file=tail.path.name,
                moved_to=aside.name,
                line=tail.line,
                bytes=tail.size,
            )
        self._record_broken(report)

    @classmethod
    def open(cls, data_dir: Path) -> AuditLog:
        """The server's audit log in ``data_dir``, keyed by the recordings master key."""
        return cls(log_path(data_dir), load_or_create_master_key(data_dir))

    @property
    def head(self) -> Head:
        """The last entry recorded (seq, mac): what anchors the log outside it."""
        return self._head

    def record(self, action: str, /, **fields: Any) -> dict[str, Any]:
        """Chain an entry and queue it for the writer thread; no disk I/O here."""
        clash = RESERVED & fields.keys()
        if clash:
            raise ValueError(f"audit fields {sorted(clash)} are set by the log itself")
        with self._lock:
            body = {"at": round(time.time(), 3), "action": action, **fields}
            head, line = seal_entry(self._keys, self._head, body)
            # Under the lock, so the order in the file is the order of the calls.
            self._writer.append(Sealed(head, line))
            self._head = head
        return {**body, "seq": head.seq, "mac": head.mac}

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything recorded so far is in the file; False on timeout."""
        return self._writer.wait_written(self._head.seq, timeout_s)

    def close(self) -> None:
        """Write what is queued and checkpoint the head. Later entries are written at once."""
        with self._lock:
            self._writer.close()

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every entry in the file (after a flush): for tests and tools, not the event loop."""
        self.flush()
        with self.path.open("rb") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)

    def _record_rotated(self, rotated: Rotated) -> None:
        log.warning(
            "audit log: a log of the previous, unkeyed version was renamed to %s; a keyed "
            "chain starts",
            rotated.path.name,
        )
        self.record(
            "audit_rotated",
            previous_file=rotated.path.name,
            previous_entries=rotated.entries,
            previous_last_hash=rotated.last_hash,
            previous_first_break=rotated.first_break,
        )

    def _record_broken(self, report: AuditReport) -> None:
        findings = [f for f in report.findings if f.kind != "torn"]
        if not findings:
            return
        count = report.count - len(report.torn)
        log.error(
            "audit log: %d problems at start-up, first %s; the chain carries on from seq %d. "
            "Details: teleconsult audit verify",
            count,
            findings[0],
            report.head.seq,
        )
        self.record(
            "audit_chain_broken",
            problems=count,
            first=[
                {"kind": f.kind, "file": f.file, "line": f.line}
                for f in findings[:_FINDINGS_LISTED]
            ],
            continues_from=report.head.seq,
        )
