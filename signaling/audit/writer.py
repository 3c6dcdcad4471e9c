"""The audit log's writer thread: appends sealed lines in the order given, and checkpoints.

The event loop that calls ``AuditLog.record`` also forwards media (the embedded Worker), so
no write, fsync or open happens there: lines go through a queue to this thread, which
appends whatever has queued up in one write. A checkpoint (the head, signed) goes to
``audit.checkpoints`` every ``every`` entries or ``interval_s`` seconds, whichever comes
first, and at ``close``; the log is fsynced first, so a checkpoint never names an entry a
power cut could still take away.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from signaling.audit.chain import START, AuditKeys, Head, checkpoint_line, checkpoints_path

log = logging.getLogger(__name__)

# After a failed write (disk full), how long before trying again. The lines wait in memory.
RETRY_S = 1.0


@dataclass(frozen=True)
class Sealed:
    head: Head
    line: bytes


_STOP = object()


class AuditWriter:
    def __init__(
        self,
        log_path: Path,
        keys: AuditKeys,
        head: Head,
        checkpointed: Head | None,
        *,
        every: int,
        interval_s: float,
    ) -> None:
        self._log_path = log_path
        self._checkpoints_path = checkpoints_path(log_path)
        self._keys = keys
        self._every = every
        self._interval_s = interval_s
        self._queue: queue.SimpleQueue[Sealed | object] = queue.SimpleQueue()
        self._fd: int | None = None
        self._size = 0
        self._written = head
        self._checkpointed = checkpointed
        self._checkpoint_at = time.monotonic() + interval_s
        self._retry_at: float | None = None
        self._failing = False
        self._progress = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._open()
        self._thread.start()

    def append(self, sealed: Sealed) -> None:
        """Queue a line; the caller serializes calls, and lines land in that order."""
        if self._closed:
            # Only something racing shutdown: written here and now, checkpointed with it.
            self._open()
            try:
                self._write([sealed])
                self._checkpoint()
            finally:
                self._close_fd()
            return
        self._queue.put(sealed)

    def wait_written(self, seq: int, timeout_s: float) -> bool:
        """Wait until the entry ``seq`` is in the file; False on timeout."""
        with self._progress:
            return self._progress.wait_for(lambda: self._written.seq >= seq, timeout_s)

    def close(self) -> None:
        """Write what is queued, checkpoint the head and stop the thread."""
        if self._closed:
            return
        self._queue.put(_STOP)
        self._thread.join()
        self._closed = True
        self._close_fd()

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        pending: list[Sealed] = []
        stop = False
        while not stop:
            try:
                item = self._queue.get(timeout=self._wakeup(bool(pending)))
            except queue.Empty:
                item = None
            while item is not None:
                if item is _STOP:
                    stop = True
                elif isinstance(item, Sealed):
                    pending.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            try:
                if pending and (
                    stop or self._retry_at is None or time.monotonic() >= self._retry_at
                ):
                    if self._write(pending):
                        pending = []
                if (
                    stop
                    or time.monotonic() >= self._checkpoint_at
                    or self._unsealed() >= self._every
                ):
                    self._checkpoint()
            except Exception:
                # A dead writer would lose every later entry without a word: keep going.
                log.exception("audit log: writer error")
                self._retry_at = time.monotonic() + RETRY_S
        if pending:
            log.error("audit log: %d entries could not be written before shutdown", len(pending))

    def _wakeup(self, pending: bool) -> float | None:
        """Seconds until there is something to do without a new line, or None for never."""
        now = time.monotonic()
        if pending and self._retry_at is not None:
            return max(0.0, self._retry_at - now)
        if self._unsealed():
            return max(0.0, self._checkpoint_at - now)
        return None

    def _unsealed(self) -> int:
        """Entries written since the last checkpoint."""
        base = self._checkpointed or START
        if self._written in (base, START):
            return 0
        # At least 1: a chain that carried on past tampering may have gone back in seq.
        return max(1, self._written.seq - base.seq)

    def _write(self, batch: list[Sealed]) -> bool:
        try:
            self._size = _append(self._fd_now(), b"".join(s.line for s in batch), self._size)
        except OSError as exc:
            if not self._failing:
                log.error("audit log: cannot write (%s); retrying every %.0f s", exc, RETRY_S)
            self._failing = True
            self._retry_at = time.monotonic() + RETRY_S
            return False
        if self._failing:
            log.warning("audit log: writing again")
        self._failing, self._retry_at = False, None
        with self._progress:
            self._written = batch[-1].head
            self._progress.notify_all()
        return True

    def _checkpoint(self) -> None:
        self._checkpoint_at = time.monotonic() + self._interval_s
        if not self._unsealed():
            return
        head = self._written
        try:
            os.fsync(self._fd_now())
            fd = os.open(self._checkpoints_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                line = checkpoint_line(self._keys, head, round(time.time(), 3))
                _append(fd, line, os.fstat(fd).st_size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("audit log: cannot write a checkpoint (%s)", exc)
            return
        self._checkpointed = head

    def _open(self) -> None:
        self._fd = os.open(self._log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size

    def _fd_now(self) -> int:
        assert self._fd is not None
        return self._fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _append(fd: int, data: bytes, size: int) -> int:
    """Append all of ``data`` to a file of ``size`` bytes; on failure cut it back and raise.

    Cutting back needs no free space, and leaves no half line for the next write to follow.
    """
    done = 0
    try:
        while done < len(data):
            n = os.write(fd, data[done:])
            if n <= 0:
                raise OSError("short write")
            done += n
    except OSError:
        if done:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
        raise
    return size + done
