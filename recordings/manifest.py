"""The manifest of one recording: what was recorded, from whom, with whose consent.

Decision: the manifest is *encrypted* with the consultation's data key, in the same chunked
AES-256-GCM format as the media (``manifest.json.enc``). That gives, with one mechanism:
  - integrity: GCM authenticates it, so the SHA-256 of each file it lists cannot be changed
    without the key — verify() trusts those hashes only because of that;
  - confidentiality: participant ids, roles and consent times are medical-record metadata;
  - shredding: destroying the data key makes the manifest unreadable with the media.
It is rewritten whole (new file, then rename) when it changes, at most about once a second
(the Recorder coalesces saves), so after a crash the last complete version remains.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from recordings.crypto import EncryptedWriter, decrypt_to_bytes
from recordings.errors import TamperedError

FORMAT = "teleconsult-recording"
VERSION = 1


@dataclass
class ConsentEvent:
    at: float  # unix time
    participant: str  # opaque participant id
    granted: bool  # False: refused or withdrawn


@dataclass
class TrackEntry:
    """One file: one Producer's frames between two consent/track boundaries (a segment)."""

    id: str
    producer: str
    participant: str
    role: str
    kind: str  # audio | video
    codec: str  # vp8 | h264 | opus
    file: str | None = None  # None until its first frame (video: its first keyframe)
    params: dict[str, Any] = field(default_factory=dict)  # width/height, sample rate, ...
    time_base: str = ""  # of start_pts / end_pts, e.g. "1/90000"
    start_pts: int | None = None  # on the worker's clock: tracks line up
    end_pts: int | None = None
    frames: int = 0
    keyframes: int = 0
    dropped: int = 0
    # recording | complete | truncated (stopped without its final chunk) | empty
    state: str = "recording"
    # stopped | everyone_left | removed | consent_withdrawn | mux_error (a frame the muxer
    # refused: this track only) | shutdown | disk_full | error
    stop_reason: str | None = None
    started_at: float | None = None
    stopped_at: float | None = None
    sha256: str | None = None  # of the encrypted file, once it is closed
    size: int | None = None  # bytes of the encrypted file

    @property
    def start_s(self) -> float | None:
        return None if self.start_pts is None else float(self.start_pts * Fraction(self.time_base))

    @property
    def end_s(self) -> float | None:
        return None if self.end_pts is None else float(self.end_pts * Fraction(self.time_base))


@dataclass
class Exclusion:
    """A track left out of the recording, and why (late joiner without consent, ...)."""

    at: float
    producer: str
    participant: str
    kind: str
    reason: str  # no_consent | consent_withdrawn


@dataclass
class ComposedEntry:
    file: str
    sha256: str
    size: int
    duration_s: float
    width: int
    height: int
    created_at: float
    tiles: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Manifest:
    consultation: str
    recording: str
    started_at: float
    # recording | complete | stopped_disk_full | failed (a write error other than disk full)
    state: str = "recording"
    stopped_at: float | None = None
    participants: dict[str, str] = field(default_factory=dict)  # opaque id -> role
    consent: list[ConsentEvent] = field(default_factory=list)
    tracks: list[TrackEntry] = field(default_factory=list)
    excluded: list[Exclusion] = field(default_factory=list)
    # {"at", "type": gap | track_error | disk_full | error, ...}: see docs/recordings.md
    events: list[dict[str, Any]] = field(default_factory=list)
    composed: ComposedEntry | None = None

    def to_json(self) -> bytes:
        doc = {"format": FORMAT, "version": VERSION, **asdict(self)}
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, name: Path | str = "manifest") -> Manifest:
        try:
            doc = json.loads(raw)
            if doc.pop("format") != FORMAT or doc.pop("version") != VERSION:
                raise ValueError("unknown manifest format")
            doc["consent"] = [ConsentEvent(**c) for c in doc["consent"]]
            doc["tracks"] = [TrackEntry(**t) for t in doc["tracks"]]
            doc["excluded"] = [Exclusion(**x) for x in doc["excluded"]]
            if doc.get("composed") is not None:
                doc["composed"] = ComposedEntry(**doc["composed"])
            return cls(**doc)
        except (ValueError, KeyError, TypeError) as e:
            # Authenticated yet unparsable: written by something else, not by a crash.
            raise TamperedError(name, f"the manifest does not parse ({e})") from e

    @property
    def truncated(self) -> bool:
        return self.state != "complete" or any(t.state == "truncated" for t in self.tracks)

    def track(self, track_id: str) -> TrackEntry:
        for t in self.tracks:
            if t.id == track_id:
                return t
        raise KeyError(track_id)

    def save(self, path: Path, data_key: bytes) -> None:
        """Encrypt to a new file next to ``path``, then rename over it (atomic)."""
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        writer = EncryptedWriter.create(tmp, data_key)
        try:
            writer.write(self.to_json())
            writer.close()
            os.replace(tmp, path)
        except BaseException:
            writer.abort()
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path, data_key: bytes) -> Manifest:
        return cls.from_json(decrypt_to_bytes(path, data_key), path)
