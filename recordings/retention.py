"""Retention: legal holds, purging (crypto-shredding), and verifying what is on disk.

Purging a consultation destroys its data key *first*: from that instant every file of it,
including copies in backups of the recordings directory, is unreadable, even if deleting
the files is then interrupted. A consultation under legal hold is never purged.

The same data key seals the consultation's clinical records (the patient's name, the
request's reason, invitees' names and links, attachments and their names, expert opinions:
signaling/console/cipher.py), so a purge shreds those too: their rows keep only ids, kinds,
states and times, and show as "shredded". Attachments live under the consultation's
directory here and are deleted with it. A consultation without recordings is as old as its
data key, made when its record was.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from recordings.crypto import iter_plaintext, make_private_dir
from recordings.errors import (
    KeyDestroyedError,
    LegalHoldError,
    RecordingError,
    ReorderedError,
    TamperedError,
    TruncatedError,
    WrongKeyError,
)
from recordings.manifest import Manifest
from recordings.store import MANIFEST_NAME, RecordingStore
from rooms.consultation import validate_consultation_id

DAY_S = 86400.0


@dataclass(frozen=True)
class Problem:
    consultation: str
    recording: str | None
    path: str
    # missing | hash_mismatch | truncated | tampered | reordered | wrong_key | key_destroyed
    # | unlisted (a file the manifest does not name) | unfinished (recording never stopped)
    kind: str
    detail: str


@dataclass
class VerifyReport:
    files_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def of_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]


@dataclass
class PurgeReport:
    purged: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # old enough, kept by a legal hold
    kept: list[str] = field(default_factory=list)  # not old enough


def _kind(error: RecordingError) -> str:
    if isinstance(error, TruncatedError):
        return "truncated"
    if isinstance(error, ReorderedError):
        return "reordered"
    if isinstance(error, WrongKeyError):
        return "wrong_key"
    if isinstance(error, KeyDestroyedError):
        return "key_destroyed"
    return "tampered"  # TamperedError, FormatError


class Retention:
    def __init__(self, store: RecordingStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock

    # --- legal hold -------------------------------------------------------------------

    def _hold_path(self, consultation: str) -> Path:
        return self.store.holds_dir / f"{validate_consultation_id(consultation)}.json"

    def hold(self, consultation: str, reason: str = "") -> None:
        """Keep a consultation from purging until released (litigation, complaint, audit)."""
        make_private_dir(self.store.holds_dir)
        record = {"consultation": consultation, "since": self._clock(), "reason": reason}
        self._hold_path(consultation).write_text(json.dumps(record))

    def release(self, consultation: str) -> bool:
        try:
            self._hold_path(consultation).unlink()
            return True
        except FileNotFoundError:
            return False

    def is_held(self, consultation: str) -> bool:
        return self._hold_path(consultation).exists()

    def holds(self) -> list[str]:
        if not self.store.holds_dir.exists():
            return []
        return sorted(p.stem for p in self.store.holds_dir.glob("*.json"))

    # --- purge ------------------------------------------------------------------------

    def last_activity(self, consultation: str) -> float | None:
        """When the consultation's newest recording stopped (or was composed)."""
        times: list[float] = []
        for rid in self.store.recordings(consultation):
            try:
                m = Manifest.load(
                    self.store.manifest_path(consultation, rid),
                    self.store.keystore.data_key(consultation),
                )
                times += [t for t in (m.started_at, m.stopped_at) if t is not None]
                if m.composed is not None:
                    times.append(m.composed.created_at)
            except (RecordingError, FileNotFoundError):
                # Unreadable manifest (key gone, damage, crash before the first save): the
                # files' modification times are the best evidence left.
                d = self.store.recording_dir(consultation, rid)
                times += [p.stat().st_mtime for p in d.iterdir() if p.is_file()]
        key_file = self.store.keystore.path(consultation)
        if not times and key_file.exists():
            times.append(key_file.stat().st_mtime)
        return max(times) if times else None

    def purge(self, older_than_days: float) -> PurgeReport:
        """Crypto-shred and delete every consultation idle for longer, unless held."""
        cutoff = self._clock() - older_than_days * DAY_S
        report = PurgeReport()
        for consultation in self.store.consultations():
            last = self.last_activity(consultation)
            if last is not None and last > cutoff:
                report.kept.append(consultation)
            elif self.is_held(consultation):
                report.held.append(consultation)
            else:
                self.purge_consultation(consultation)
                report.purged.append(consultation)
        return report

    def purge_consultation(self, consultation: str) -> None:
        """Destroy the data key (recordings, attachments and clinical records become
        unreadable at once), then the files. Raises LegalHoldError if held."""
        if self.is_held(consultation):
            raise LegalHoldError(
                self._hold_path(consultation), f"consultation {consultation} is under legal hold"
            )
        self.store.keystore.destroy_key(consultation)
        d = self.store.consultation_dir(consultation)
        if d.exists():
            shutil.rmtree(d)

    # --- verify -----------------------------------------------------------------------

    def verify(self, consultation: str | None = None) -> VerifyReport:
        """Check every file: present, hash as recorded, every chunk authentic, not cut short."""
        report = VerifyReport()
        consultations = [consultation] if consultation else self.store.consultations()
        for c in consultations:
            try:
                key: bytes | None = self.store.keystore.data_key(c)
            except RecordingError as e:
                key = None
                if self.store.recordings(c):
                    report.problems.append(Problem(c, None, str(e.path), _kind(e), e.reason))
            for rid in self.store.recordings(c):
                if key is not None:
                    self._verify_recording(c, rid, key, report)
        return report

    def _verify_recording(self, c: str, rid: str, key: bytes, report: VerifyReport) -> None:
        d = self.store.recording_dir(c, rid)
        on_disk = {p.name for p in d.iterdir() if p.is_file() and not p.name.startswith(".")}
        mpath = d / MANIFEST_NAME
        report.files_checked += 1
        try:
            m = Manifest.load(mpath, key)
        except FileNotFoundError:
            report.problems.append(Problem(c, rid, str(mpath), "missing", "no manifest"))
            m = None
        except RecordingError as e:
            report.problems.append(Problem(c, rid, str(mpath), _kind(e), e.reason))
            m = None
        listed: dict[str, str | None] = {}
        if m is not None:
            if m.state == "recording":
                report.problems.append(
                    Problem(
                        c,
                        rid,
                        str(mpath),
                        "unfinished",
                        "the recording never stopped: the worker died while recording",
                    )
                )
            for t in m.tracks:
                if t.file:
                    listed[t.file] = t.sha256
            if m.composed is not None:
                listed[m.composed.file] = m.composed.sha256
        for name in sorted(on_disk - {MANIFEST_NAME} - set(listed)):
            # Written after the last manifest save (a crash): still checked below.
            if m is not None:
                report.problems.append(
                    Problem(c, rid, str(d / name), "unlisted", "not named in the manifest")
                )
            listed[name] = None
        for name, sha in sorted(listed.items()):
            self._verify_file(c, rid, d / name, sha, key, report)

    def _verify_file(
        self, c: str, rid: str, path: Path, sha: str | None, key: bytes, report: VerifyReport
    ) -> None:
        report.files_checked += 1
        if not path.exists():
            report.problems.append(Problem(c, rid, str(path), "missing", "listed, not on disk"))
            return
        if sha is not None:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            if h.hexdigest() != sha:
                report.problems.append(
                    Problem(c, rid, str(path), "hash_mismatch", "SHA-256 differs from the manifest")
                )
        try:
            for _ in iter_plaintext(path, key):
                pass
        except TruncatedError as e:
            report.problems.append(
                Problem(
                    c,
                    rid,
                    str(path),
                    "truncated",
                    f"{e.reason}; the first {e.readable_bytes} bytes decrypt",
                )
            )
        except (TamperedError, RecordingError) as e:
            report.problems.append(Problem(c, rid, str(path), _kind(e), e.reason))
