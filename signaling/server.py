"""The Server: the parts one signaling process composes, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from media.client import WorkerClient
from recordings.store import RecordingStore
from rooms.records.database import Database
from rooms.store import RoomStore
from signaling.audit.log import AuditLog
from signaling.config import ServerConfig
from signaling.events import EventStream
from signaling.room.revocation import RevocationGuard
from signaling.room.rooms import Rooms

if TYPE_CHECKING:
    from signaling.room.remote import Relay


@dataclass
class Server:
    config: ServerConfig
    store: RoomStore
    rooms: Rooms
    worker: WorkerClient
    audit: AuditLog
    recording_store: RecordingStore
    database: Database
    revocation: RevocationGuard
    events: EventStream
    # With several signaling nodes on Redis: who owns which consultation, and the relay to
    # the owner for sockets that land elsewhere. None when this process is the only one.
    relay: Relay | None = None
