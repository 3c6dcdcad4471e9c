"""The audit log's keyed chain: the keys, what each entry's MAC covers, and signed checkpoints.

Entry (one line of ``audit.log``): the canonical JSON of ``{seq, at, action, ...fields, mac}``
where ``mac = HMAC-SHA256(entry key, previous mac | "\\n" | canonical JSON without mac)``.
Checkpoint (one line of ``audit.checkpoints``): ``{seq, mac, at, sig}`` where ``sig`` is the
HMAC (checkpoint key) of the rest: the head of the log at that moment, signed.

Both keys are derived from the recordings master key, which never sits in the data the log
is about: someone who can only write the log cannot produce a MAC that verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# What the first entry chains on.
GENESIS = "0" * 64
CHECKPOINTS_SUFFIX = ".checkpoints"
# Fields the log sets itself; a caller's field of the same name would forge them.
RESERVED = frozenset({"seq", "at", "action", "mac"})


@dataclass(frozen=True)
class Head:
    """The last entry of a chain: what a checkpoint signs and a webhook carries."""

    seq: int
    mac: str


START = Head(0, GENESIS)


@dataclass(frozen=True)
class AuditKeys:
    entry: bytes
    checkpoint: bytes

    @classmethod
    def derive(cls, master_key: bytes) -> AuditKeys:
        # Separate keys: a checkpoint can never pass for an entry, nor the reverse.
        return cls(_hkdf(master_key, b"entries"), _hkdf(master_key, b"checkpoints"))

    def __repr__(self) -> str:
        return "AuditKeys(<secret>)"


def checkpoints_path(log_path: Path) -> Path:
    """``audit.log`` -> ``audit.checkpoints``, next to it."""
    return log_path.with_suffix(CHECKPOINTS_SUFFIX)


def canonical(body: dict[str, Any]) -> bytes:
    """One byte string per JSON value: sorted keys, no spaces, ASCII only."""
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")


def entry_mac(keys: AuditKeys, prev_mac: str, body: dict[str, Any]) -> str:
    """The MAC of an entry (``body`` without its ``mac``) chained on the previous one's."""
    message = prev_mac.encode("utf-8", "surrogatepass") + b"\n" + canonical(body)
    return hmac.new(keys.entry, message, hashlib.sha256).hexdigest()


def seal_entry(keys: AuditKeys, prev: Head, body: dict[str, Any]) -> tuple[Head, bytes]:
    """The entry after ``prev``: its head and its line (with the newline)."""
    body = {**body, "seq": prev.seq + 1}
    mac = entry_mac(keys, prev.mac, body)
    return Head(prev.seq + 1, mac), canonical({**body, "mac": mac}) + b"\n"


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """The JSON object on a line, or None if it is not one."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def is_unkeyed(entry: dict[str, Any]) -> bool:
    """A line of the previous version's log: SHA-256 chained (``prev``, ``hash``), no key."""
    return "hash" in entry and "prev" in entry and "mac" not in entry


def entry_head(entry: dict[str, Any]) -> Head | None:
    """The (seq, mac) an entry claims, or None if it lacks them: a malformed line."""
    seq, mac = entry.get("seq"), entry.get("mac")
    if type(seq) is not int or not isinstance(mac, str):
        return None
    return Head(seq, mac)


def entry_verifies(keys: AuditKeys, prev: Head, entry: dict[str, Any]) -> bool:
    """Whether ``entry`` is the one that follows ``prev`` in a chain made with ``keys``."""
    head = entry_head(entry)
    if head is None or head.seq != prev.seq + 1:
        return False
    body = {k: v for k, v in entry.items() if k != "mac"}
    return hmac.compare_digest(entry_mac(keys, prev.mac, body), head.mac)


def checkpoint_line(keys: AuditKeys, head: Head, at: float) -> bytes:
    body = {"seq": head.seq, "mac": head.mac, "at": at}
    return canonical({**body, "sig": _checkpoint_sig(keys, body)}) + b"\n"


def checkpoint_head(keys: AuditKeys, record: dict[str, Any]) -> Head | None:
    """The head a checkpoint line vouches for, or None if its signature fails."""
    body = {k: v for k, v in record.items() if k != "sig"}
    sig = record.get("sig")
    head = entry_head(body)
    if head is None or set(body) != {"seq", "mac", "at"} or not isinstance(sig, str):
        return None
    if not hmac.compare_digest(_checkpoint_sig(keys, body), sig):
        return None
    return head


def _checkpoint_sig(keys: AuditKeys, body: dict[str, Any]) -> str:
    return hmac.new(keys.checkpoint, canonical(body), hashlib.sha256).hexdigest()


def _hkdf(master_key: bytes, purpose: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"teleconsult audit log v1 " + purpose,
    ).derive(master_key)
