"""A Recorder on its own writer thread, and the thin handle the event loop holds on it.

The event loop that forwards media must never wait on a disk. So all of a recording's disk
work (the directory, the data key, opening files, muxing, AES-GCM, checkpoints, manifest
saves, closing) runs on one thread per recording, which owns a synchronous ``Recorder``;
the loop only puts commands (``recordings.commands``) on its queue. What the thread has to
say (started, stopped for a full disk or an error, a start that failed, a keyframe wanted)
comes back to the loop with ``loop.call_soon_threadsafe``.

The queue is bounded for frames, in bytes and in count: when a slow disk lets it fill, the
recording's frames are dropped, counted and reported as a ``gap`` in the manifest (a video
track resumes at the next keyframe), and forwarding never waits. It stays in that state
until the queue has drained to half, so a disk that keeps up only just does not write one
gap per frame. Commands (consent, tracks, stop) are never dropped: they are few (consent
is rate-limited upstream) and losing a stop or a withdrawal would be wrong.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

from recordings.commands import (
    AddTrack,
    Command,
    Consent,
    Frame,
    Gap,
    RemoveTrack,
    Start,
    Stop,
    apply,
)
from recordings.errors import ConsentError, RecordingError
from recordings.recorder import Recorder
from recordings.store import RecordingStore

log = logging.getLogger(__name__)

# About 8 s of a four-party call at 1 Mb/s each: room for a disk's hiccup (a slow fsync),
# not for a disk that cannot keep up.
MAX_QUEUED_BYTES = 4 * 1024 * 1024
MAX_QUEUED_FRAMES = 2000
# How often an idle writer checks whether the process is exiting.
IDLE_POLL_S = 1.0

EventCallback = Callable[[dict[str, Any]], None]


class RecorderThread:
    """The event loop's handle on one recording. Every method only enqueues: no disk I/O.

    ``on_event`` is called on the loop with the Recorder's events (``recording_started``,
    ``recording_stopped`` with a reason), ``start_failed`` (reason ``consent_required`` or
    ``failed``) and ``keyframe_needed`` (a ``producer`` id whose Producer should be asked).
    """

    def __init__(
        self,
        store: RecordingStore,
        consultation: str,
        *,
        on_event: EventCallback,
        max_queued_bytes: int | None = None,
        max_queued_frames: int | None = None,
        **recorder_options: Any,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_event = on_event
        # Building it does no I/O (ids and paths only); from here on only the thread uses it.
        self._recorder = Recorder(store, consultation, on_event=self._post, **recorder_options)
        self.recording = self._recorder.recording
        self._max_bytes = MAX_QUEUED_BYTES if max_queued_bytes is None else max_queued_bytes
        self._max_frames = MAX_QUEUED_FRAMES if max_queued_frames is None else max_queued_frames
        self._queue: queue.SimpleQueue[Command | Frame] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards the two counters below, shared with the thread
        self._queued_bytes = 0
        self._queued_frames = 0
        self._dropping = False
        self._gaps: dict[str, int] = {}  # producer id -> frames dropped since its last one
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.dropped = 0  # frames refused because the queue was full
        self.done: asyncio.Future[None] = self._loop.create_future()

    # ------------------------------------------------------------ the loop's side

    def start(self, present: Mapping[str, str], *, resume: bool = False) -> None:
        """Start recording (on the thread); a failure comes back as ``start_failed``."""
        if self._thread is not None or self._stopped:
            return
        self._queue.put(Start(dict(present), resume))
        self._thread = threading.Thread(
            target=self._run, name=f"recorder-{self.recording}", daemon=False
        )
        self._thread.start()

    def consent(self, participant_id: str, granted: bool, role: str | None = None) -> None:
        self._command(Consent(participant_id, granted, role))

    def add_track(
        self, producer_id: str, participant_id: str, role: str, kind: str, codec: str
    ) -> None:
        self._command(AddTrack(producer_id, participant_id, role, kind, codec))

    def remove_track(self, producer_id: str) -> None:
        self._flush_gap(producer_id)
        self._command(RemoveTrack(producer_id))

    def write(
        self, producer_id: str, data: bytes, pts: int, time_base: Fraction, keyframe: bool
    ) -> bool:
        """Queue one frame; False if it was dropped (not recording, or the queue is full)."""
        if self._thread is None or self._stopped:
            return False
        size = len(data)
        was_dropping = self._dropping
        with self._lock:
            if (
                self._dropping
                and self._queued_frames <= self._max_frames // 2
                and self._queued_bytes <= self._max_bytes // 2
            ):
                self._dropping = False
            if not self._dropping and (
                self._queued_frames >= self._max_frames
                or self._queued_bytes + size > self._max_bytes
            ):
                self._dropping = True
            if not self._dropping:
                self._queued_frames += 1
                self._queued_bytes += size
        if self._dropping and not was_dropping:
            log.warning("recording %s: the disk is behind, dropping frames", self.recording)
        if self._dropping:
            self.dropped += 1
            self._gaps[producer_id] = self._gaps.get(producer_id, 0) + 1
            return False
        self._flush_gap(producer_id)
        self._queue.put((producer_id, data, pts, time_base, keyframe))
        return True

    def stop(self, reason: str) -> None:
        """Close everything (on the thread, after what is queued); ``done`` resolves then."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is None:
            # Never started: nothing reached the disk, and no thread needs to end.
            self.done.set_result(None)
            return
        for producer_id in list(self._gaps):
            self._flush_gap(producer_id)
        self._queue.put(Stop(reason))

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def _command(self, command: Command) -> None:
        if not self._stopped:
            self._queue.put(command)

    def _flush_gap(self, producer_id: str) -> None:
        dropped = self._gaps.pop(producer_id, 0)
        if dropped:
            self._command(Gap(producer_id, dropped))

    def _deliver(self, event: dict[str, Any]) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("recording event handler failed")

    def _finished(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    # ------------------------------------------------------------ the thread's side

    def _post(self, event: dict[str, Any]) -> None:
        """From the thread to the loop. A loop already closed (process exit) hears nothing."""
        try:
            self._loop.call_soon_threadsafe(self._deliver, event)
        except RuntimeError:
            pass

    def _keyframe_needed(self, producer_id: str) -> None:
        self._post({"type": "keyframe_needed", "producer": producer_id})

    def _run(self) -> None:
        recorder = self._recorder
        try:
            while True:
                due = recorder.manifest_due_in()
                if due == 0:
                    # Busy with frames of tracks that save nothing themselves: save here.
                    recorder.save_manifest()
                    due = None
                try:
                    item = self._queue.get(timeout=IDLE_POLL_S if due is None else due)
                except queue.Empty:
                    recorder.save_manifest()
                    if not threading.main_thread().is_alive():
                        # The process is exiting without having stopped us: close the
                        # files properly rather than leave them truncated.
                        recorder.stop("shutdown")
                        return
                    continue
                if isinstance(item, tuple):
                    with self._lock:
                        self._queued_frames -= 1
                        self._queued_bytes -= len(item[1])
                elif isinstance(item, Start):
                    self._start(item)
                    continue
                try:
                    apply(recorder, item, self._keyframe_needed)
                except Exception:
                    # A bug must not end the thread: the loop would queue into the void.
                    log.exception("recording %s: a %s failed", self.recording, type(item))
                if isinstance(item, Stop):
                    return
        finally:
            try:
                self._loop.call_soon_threadsafe(self._finished)
            except RuntimeError:
                pass

    def _start(self, command: Start) -> None:
        try:
            apply(self._recorder, command, self._keyframe_needed)
        except ConsentError as e:
            log.warning("recording %s refused: %s", self.recording, e)
            self._post({"type": "start_failed", "reason": "consent_required"})
        except (RecordingError, OSError) as e:
            log.error("recording %s could not start: %s", self.recording, e)
            self._post({"type": "start_failed", "reason": "failed"})
