"""The Server: the parts one signaling process composes, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from media.worker import Worker
from recordings.store import RecordingStore
from rooms.store import RoomStore
from signaling.audit import AuditLog
from signaling.config import ServerConfig
from signaling.hub import Hub

if TYPE_CHECKING:
    from signaling.recording import ConsultationRecording


@dataclass
class Server:
    config: ServerConfig
    store: RoomStore
    hub: Hub
    worker: Worker
    audit: AuditLog
    recording_store: RecordingStore
    # At most one recording (pending or running) per consultation.
    recordings: dict[str, ConsultationRecording] = field(default_factory=dict)
