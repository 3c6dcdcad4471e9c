"""The Recorder of one consultation: encoded frames in, encrypted per-track files out.

It never decodes, so recording a stream costs a memcpy, some EBML framing and AES-GCM.
Every call does disk I/O, so in the server it runs on its own writer thread
(``recordings.writer_thread``), never on the event loop that forwards media. Not
thread-safe: call it from one thread.

Consent is enforced here too, not only in signaling: ``start`` refuses while anyone present
has not consented, frames of a participant without consent are never written, and their
tracks are listed in the manifest's ``excluded``. A late joiner's track starts (in a new
file, at a keyframe it asks the Producer for) when they consent; withdrawing closes it.

A write error (disk full above all) stops the whole recording at once: every file is cut
back to its last complete chunk and reported truncated, the manifest says why, and
``on_event`` tells the caller so clients can show it. The call itself is not affected. A
frame the muxer refuses (a malformed one from one sender) is not a write error: it closes
that track's segment only, and the rest of the recording goes on.

The manifest is saved at most once per ``manifest_interval_s`` (and at once on start, stop
and failure): a burst of changes costs one save, not one each.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from recordings.crypto import EncryptedWriter
from recordings.errors import ConsentError, RecordingError
from recordings.manifest import ConsentEvent, Exclusion, Manifest, TrackEntry
from recordings.store import RecordingStore, new_recording_id, validate_recording_id
from recordings.track_writer import CONTAINERS, TrackWriter, normalize_codec

log = logging.getLogger(__name__)

EventCallback = Callable[[dict[str, Any]], None]


@dataclass
class _Producer:
    producer_id: str
    participant_id: str
    role: str
    kind: str
    codec: str
    request_keyframe: Callable[[], None] | None
    entry: TrackEntry | None = None  # the open segment, if recording
    writer: TrackWriter | None = None
    # Frames of the open segment dropped before they reached its writer: deltas before the
    # first keyframe or after a gap, and the frames lost in gaps.
    dropped: int = 0
    # After a gap a video track resumes only at a keyframe (deltas would not decode).
    awaiting_keyframe: bool = False


class Recorder:
    def __init__(
        self,
        store: RecordingStore,
        consultation: str,
        *,
        on_event: EventCallback | None = None,
        clock: Callable[[], float] = time.time,
        checkpoint_s: float = 1.0,
        manifest_interval_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        recording: str | None = None,
    ) -> None:
        self.store = store
        self.consultation = consultation
        # Given by whoever announced it (the consent request names it), else a new one.
        self.recording = validate_recording_id(recording) if recording else new_recording_id()
        self._on_event = on_event
        self._clock = clock
        self._checkpoint_s = checkpoint_s
        self._manifest_interval = manifest_interval_s
        self._monotonic = monotonic
        self._manifest_dirty = False
        self._manifest_saved_at = -float("inf")
        self._key: bytes | None = None
        self._consent: dict[str, bool] = {}
        self._producers: dict[str, _Producer] = {}
        self._seq = 0
        self.manifest = Manifest(consultation, self.recording, started_at=clock())
        self.state = "idle"  # idle -> recording -> complete | stopped_disk_full | failed
        self.dir = store.recording_dir(consultation, self.recording)

    # --- consent ----------------------------------------------------------------------

    def consent(self, participant_id: str, granted: bool, role: str | None = None) -> None:
        """Record a consent answer (or a withdrawal). Takes effect on live tracks at once."""
        self._consent[participant_id] = granted
        if role is not None:
            self.manifest.participants.setdefault(participant_id, role)
        self.manifest.consent.append(ConsentEvent(self._clock(), participant_id, granted))
        if self.state != "recording":
            return
        for p in self._producers.values():
            if p.participant_id != participant_id:
                continue
            if granted and p.entry is None:
                self._open_segment(p)
            elif not granted and p.entry is not None:
                self._close_segment(p, "consent_withdrawn")
                self._exclude(p, "consent_withdrawn")
        self._save()

    def has_consent(self, participant_id: str) -> bool:
        return self._consent.get(participant_id, False)

    # --- lifecycle --------------------------------------------------------------------

    def start(self, present: Mapping[str, str] | Iterable[str], *, resume: bool = False) -> None:
        """Begin recording. ``present``: participant ids (or id -> role) in the room now.

        Raises ConsentError, listing the opaque ids, unless every one of them consented.
        ``resume``: this recording was started by a Worker that died; its manifest is
        taken up where it was last saved, its unfinished files are marked truncated, and the
        recording goes on in new segments after a ``gap`` event.
        """
        if self.state != "idle":
            raise RecordingError(None, f"recorder already {self.state}")
        roles = dict(present) if isinstance(present, Mapping) else dict.fromkeys(present, "")
        missing = sorted(pid for pid in roles if not self.has_consent(pid))
        if missing:
            raise ConsentError(
                None, "cannot record: no consent yet from participant(s) " + ", ".join(missing)
            )
        for pid, role in roles.items():
            if role:
                self.manifest.participants[pid] = role
        self._key = self.store.keystore.get_or_create(self.consultation)
        manifest_path = self.store.manifest_path(self.consultation, self.recording)
        if resume and manifest_path.exists():
            self._take_up(Manifest.load(manifest_path, self._key))
        else:
            if not (resume and manifest_path.parent.exists()):
                self.store.create_recording_dir(self.consultation, self.recording)
            self.manifest.started_at = self._clock()
        self.state = "recording"
        # Producers registered before the start begin now (or are listed as excluded).
        for p in self._producers.values():
            if self.has_consent(p.participant_id):
                self._open_segment(p)
            else:
                self._exclude(p, "no_consent")
        self._save(force=True)
        self._emit("recording_started")

    def _take_up(self, earlier: Manifest) -> None:
        """Go on with a recording another Recorder left behind (its Worker died)."""
        now = self._clock()
        for entry in earlier.tracks:
            if entry.state == "recording":
                # Never closed: its last chunks died with the Worker. verify() says so too.
                entry.state = "truncated"
                entry.stop_reason = "worker_lost"
                entry.stopped_at = entry.stopped_at or now
        last = max((t.end_s or 0.0 for t in earlier.tracks), default=0.0)
        earlier.events.append(
            {"at": now, "type": "gap", "reason": "worker_lost", "media_until_s": last}
        )
        earlier.state = "recording"
        earlier.stopped_at = None
        earlier.participants.update(self.manifest.participants)
        earlier.consent.extend(self.manifest.consent)
        self.manifest = earlier
        # New segments take new file names after the ones already there.
        self._seq = max((int(t.id[1:]) for t in earlier.tracks if t.id[1:].isdigit()), default=0)

    def stop(self, reason: str = "stopped") -> Manifest:
        """Close every file (trailer + final chunk), write the final manifest."""
        if self.state != "recording":
            return self.manifest
        for p in self._producers.values():
            if p.entry is not None:
                self._close_segment(p, reason)
            if self.state != "recording":  # closing hit the disk-full path
                return self.manifest
        self.state = self.manifest.state = "complete"
        self.manifest.stopped_at = self._clock()
        self._save(force=True)
        self._emit("recording_stopped", reason=reason)
        return self.manifest

    # --- tracks -----------------------------------------------------------------------

    def add_track(
        self,
        producer_id: str,
        participant_id: str,
        role: str,
        kind: str,
        codec: str,
        *,
        request_keyframe: Callable[[], None] | None = None,
    ) -> bool:
        """Register a Producer. True if its frames will be recorded (consent given).

        ``request_keyframe`` (Producer.request_keyframe): asked when a video segment opens,
        so it does not wait a whole keyframe interval for its first frame.
        """
        if kind not in ("audio", "video"):
            raise ValueError(f"kind must be audio or video, not {kind!r}")
        p = _Producer(
            producer_id, participant_id, role, kind, normalize_codec(codec), request_keyframe
        )
        self._producers[producer_id] = p
        self.manifest.participants.setdefault(participant_id, role)
        if self.state != "recording":
            return False
        if self.has_consent(participant_id):
            self._open_segment(p)
        else:
            self._exclude(p, "no_consent")
        self._save()
        return p.entry is not None

    def remove_track(self, producer_id: str) -> None:
        p = self._producers.pop(producer_id, None)
        if p is not None and p.entry is not None and self.state == "recording":
            self._close_segment(p, "removed")
            self._save()

    def write(
        self, producer_id: str, data: bytes, pts: int, time_base: Fraction, keyframe: bool
    ) -> bool:
        """One encoded frame of a Producer. True if written. Never raises for disk errors."""
        p = self._producers.get(producer_id)
        if p is None or p.entry is None or self.state != "recording":
            return False
        entry = p.entry
        if p.kind == "video" and not keyframe and (p.writer is None or p.awaiting_keyframe):
            p.dropped += 1
            entry.dropped = p.dropped + (p.writer.stats.dropped if p.writer else 0)
            return False
        p.awaiting_keyframe = False
        if p.writer is None:
            try:
                self._open_file(p, entry)
            except OSError as e:
                self._fail(e)
                return False
        writer = p.writer
        assert writer is not None
        try:
            ok = writer.write(data, pts, time_base, keyframe)
        except Exception as e:
            cause = _disk_error(writer, e)
            if cause is not None:
                self._fail(cause)
            else:
                self._track_failed(p, e)
            return False
        st = writer.stats
        entry.frames, entry.keyframes = st.frames, st.keyframes
        entry.dropped = p.dropped + st.dropped
        if ok and entry.start_pts is None:
            entry.start_pts = st.first_pts
            entry.time_base = str(st.time_base)
            entry.params = dict(st.params)
            self._save()
        entry.end_pts = st.last_pts
        if self._manifest_dirty:
            self._save()
        return ok

    def gap(self, producer_id: str, dropped: int) -> None:
        """``dropped`` frames of a Producer never reached the Recorder (its queue was full).

        Listed in the manifest's events; a video track then resumes at the next keyframe,
        which it asks for.
        """
        p = self._producers.get(producer_id)
        if p is None or self.state != "recording" or p.entry is None:
            return
        entry = p.entry
        self.manifest.events.append(
            {
                "at": self._clock(),
                "type": "gap",
                "producer": producer_id,
                "track": entry.id,
                "dropped": dropped,
            }
        )
        p.dropped += dropped
        entry.dropped = p.dropped + (p.writer.stats.dropped if p.writer else 0)
        if p.kind == "video" and p.writer is not None:
            p.awaiting_keyframe = True
            self._request_keyframe(p)
        self._save()

    def save_manifest(self) -> None:
        """Write the manifest now if it changed since the last save."""
        if self._manifest_dirty:
            self._save(force=True)

    def manifest_due_in(self) -> float | None:
        """Seconds until a coalesced manifest save is due (0: now); None if none is waiting."""
        if not self._manifest_dirty or self._key is None:
            return None
        due = self._manifest_saved_at + self._manifest_interval
        return max(0.0, due - self._monotonic())

    # --- internals --------------------------------------------------------------------

    def _open_segment(self, p: _Producer) -> None:
        self._seq += 1
        p.dropped = 0
        p.awaiting_keyframe = False
        tb = "1/90000" if p.kind == "video" else "1/48000"
        p.entry = TrackEntry(
            id=f"t{self._seq:02d}",
            producer=p.producer_id,
            participant=p.participant_id,
            role=p.role,
            kind=p.kind,
            codec=p.codec,
            time_base=tb,
            started_at=self._clock(),
        )
        self.manifest.tracks.append(p.entry)
        if p.kind == "video":
            self._request_keyframe(p)

    def _request_keyframe(self, p: _Producer) -> None:
        if p.request_keyframe is None:
            return
        try:
            p.request_keyframe()
        except Exception:
            log.warning("keyframe request for %s failed", p.producer_id, exc_info=True)

    def _open_file(self, p: _Producer, entry: TrackEntry) -> None:
        assert self._key is not None
        ext = CONTAINERS[p.codec][1]
        name = f"{entry.id[1:]}-{p.kind}.{ext}.enc"
        out = EncryptedWriter.create(self.dir / name, self._key)
        p.writer = TrackWriter(out, p.kind, p.codec, checkpoint_s=self._checkpoint_s)
        entry.file = name

    def _close_segment(self, p: _Producer, reason: str) -> None:
        entry, writer = p.entry, p.writer
        p.entry, p.writer = None, None
        if entry is None:
            return
        entry.stop_reason = reason
        entry.stopped_at = self._clock()
        if writer is None:
            entry.state = "empty"
            return
        try:
            writer.close()
        except Exception as e:
            entry.state = "truncated"
            self._fill_file_facts(entry, writer)
            cause = _disk_error(writer, e)
            if cause is not None:
                self._fail(cause)
            else:
                self._note_track_error(entry, e)
            return
        entry.state = "complete"
        if writer.stats.time_base is not None:
            entry.time_base = str(writer.stats.time_base)
        self._fill_file_facts(entry, writer)

    def _fill_file_facts(self, entry: TrackEntry, writer: TrackWriter) -> None:
        entry.sha256 = writer.out.sha256
        entry.size = writer.out.ciphertext_bytes

    def _track_failed(self, p: _Producer, error: BaseException) -> None:
        """The muxer refused a frame of this track (not a disk error): close this segment
        only, cut back to its last complete chunk; the other tracks go on. The Producer's
        later frames are dropped until consent opens a new segment."""
        entry, writer = p.entry, p.writer
        p.entry, p.writer = None, None
        if entry is None:
            return
        entry.state = "truncated"
        entry.stop_reason = "mux_error"
        entry.stopped_at = self._clock()
        if writer is not None:
            writer.abort()
            self._fill_file_facts(entry, writer)
        self._note_track_error(entry, error)
        self._save()

    def _note_track_error(self, entry: TrackEntry, error: BaseException) -> None:
        log.warning("recording %s: track %s closed: %s", self.recording, entry.id, error)
        self.manifest.events.append(
            {
                "at": self._clock(),
                "type": "track_error",
                "track": entry.id,
                "producer": entry.producer,
                # The muxer's message: about the frame, never about who sent it.
                "detail": f"{type(error).__name__}: {error}"[:200],
            }
        )

    def _exclude(self, p: _Producer, reason: str) -> None:
        self.manifest.excluded.append(
            Exclusion(self._clock(), p.producer_id, p.participant_id, p.kind, reason)
        )

    def _fail(self, error: BaseException) -> None:
        """Stop everything after a write error, keeping every complete chunk on disk."""
        if self.state != "recording":
            return
        disk_full = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
        reason = "disk_full" if disk_full else "error"
        self.state = self.manifest.state = "stopped_disk_full" if disk_full else "failed"
        log.error("recording %s stopped: %s", self.recording, error)
        for p in self._producers.values():
            entry, writer = p.entry, p.writer
            p.entry, p.writer = None, None
            if entry is None:
                continue
            entry.stop_reason = reason
            entry.stopped_at = self._clock()
            if writer is None:
                entry.state = "empty"
                continue
            writer.abort()
            entry.state = "truncated"
            self._fill_file_facts(entry, writer)
        self.manifest.stopped_at = self._clock()
        self.manifest.events.append({"at": self._clock(), "type": reason, "detail": str(error)})
        self._save(force=True)
        self._emit("recording_stopped", reason=reason, detail=str(error))

    def _save(self, *, force: bool = False) -> None:
        """The manifest changed: write it now if forced or if the last save is old enough,
        else leave it to the next call once ``manifest_interval_s`` has passed."""
        if self._key is None:
            return
        self._manifest_dirty = True
        now = self._monotonic()
        if not force and now - self._manifest_saved_at < self._manifest_interval:
            return
        self._manifest_dirty = False
        self._manifest_saved_at = now
        try:
            self.manifest.save(
                self.store.manifest_path(self.consultation, self.recording), self._key
            )
        except OSError as e:
            # With the disk full even the manifest may not fit: the previous version stays,
            # and verify() then reports the files it lists as truncated.
            log.error("cannot write the manifest of %s: %s", self.recording, e)
            if self.state == "recording":
                self._fail(e)

    def _emit(self, event: str, **detail: Any) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(
                {
                    "type": event,
                    "consultation": self.consultation,
                    "recording": self.recording,
                    **detail,
                }
            )
        except Exception:
            log.exception("recording event callback failed")


def _disk_error(writer: TrackWriter, error: BaseException) -> OSError | None:
    """The OS-level error behind a failed write, if it was one (PyAV re-raises a failed
    write to our file object as its own error types; ``out.failed`` keeps the real one)."""
    if writer.out.failed is not None:
        return writer.out.failed
    return error if isinstance(error, OSError) else None
