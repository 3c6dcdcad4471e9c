"""The Server: the parts one signaling process composes, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from media.worker import Worker
from rooms.store import RoomStore
from signaling.config import ServerConfig
from signaling.hub import Hub


@dataclass
class Server:
    config: ServerConfig
    store: RoomStore
    hub: Hub
    worker: Worker
