"""Listing recordings and reading their files back (decrypted on the fly, never to disk).

Permission checks and the audit log belong to the caller (signaling): this module answers
what exists and hands out plaintext streams, nothing more.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from recordings.crypto import DecryptedReader, iter_plaintext, open_decrypted
from recordings.errors import RecordingError
from recordings.manifest import Manifest
from recordings.store import COMPOSED_NAME, RecordingStore


@dataclass(frozen=True)
class RecordingInfo:
    consultation: str
    recording: str
    # complete | recording (still running, or the worker died) | stopped_disk_full | failed
    # | unreadable (key destroyed, wrong master key, damaged manifest: see ``error``)
    state: str
    started_at: float | None = None
    stopped_at: float | None = None
    truncated: bool = False
    tracks: int = 0
    participants: int = 0
    composed: bool = False
    composed_duration_s: float | None = None
    error: str | None = None


class Catalog:
    def __init__(self, store: RecordingStore) -> None:
        self.store = store

    def consultations(self) -> list[str]:
        return self.store.consultations()

    def manifest(self, consultation: str, recording: str) -> Manifest:
        key = self.store.keystore.data_key(consultation)
        return Manifest.load(self.store.manifest_path(consultation, recording), key)

    def list(self, consultation: str) -> list[RecordingInfo]:
        """Every recording of a consultation, oldest first. Unreadable ones say why."""
        out = []
        for rid in self.store.recordings(consultation):
            try:
                m = self.manifest(consultation, rid)
            except (RecordingError, FileNotFoundError) as e:
                out.append(RecordingInfo(consultation, rid, "unreadable", error=str(e)))
                continue
            out.append(
                RecordingInfo(
                    consultation,
                    rid,
                    m.state,
                    m.started_at,
                    m.stopped_at,
                    m.truncated,
                    tracks=sum(1 for t in m.tracks if t.file),
                    participants=len(m.participants),
                    composed=m.composed is not None,
                    composed_duration_s=m.composed.duration_s if m.composed else None,
                )
            )
        return out

    def _checked_name(self, consultation: str, recording: str, name: str) -> str:
        # Only files the (authenticated) manifest lists can be opened: a name from an HTTP
        # request never reaches the filesystem unchecked.
        m = self.manifest(consultation, recording)
        listed = {t.file for t in m.tracks if t.file}
        if m.composed is not None:
            listed.add(m.composed.file)
        if name not in listed:
            raise FileNotFoundError(f"recording {recording} has no file {name!r}")
        return name

    def open(self, consultation: str, recording: str, name: str = COMPOSED_NAME) -> DecryptedReader:
        """A seekable plaintext reader (HTTP range requests, PyAV). Caller closes it."""
        name = self._checked_name(consultation, recording, name)
        key = self.store.keystore.data_key(consultation)
        path = self.store.recording_dir(consultation, recording) / name
        return open_decrypted(path, key, allow_truncated=True)

    def stream(
        self, consultation: str, recording: str, name: str = COMPOSED_NAME
    ) -> Iterator[bytes]:
        """Plaintext chunk by chunk, each authenticated before it is yielded (downloads).

        A damaged file raises part way, so a download stops instead of delivering garbage.
        """
        name = self._checked_name(consultation, recording, name)
        key = self.store.keystore.data_key(consultation)
        return iter_plaintext(self.store.recording_dir(consultation, recording) / name, key)
