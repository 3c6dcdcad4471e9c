"""Everything the server is told at start-up, built by the CLI and held by the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from media.config import MediaConfig
from signaling.http.composing import default_limit
from signaling.http.guard import GuardLimits
from signaling.webhooks.settings import WebhookSettings


# kw_only: the defaults below come before the required fields in reading order, and keyword
# construction keeps call sites readable as fields are added.
@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    # Loopback by default: exposing a medical service is a decision, not an accident.
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path
    media: MediaConfig = field(default_factory=MediaConfig)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Base URL put in invite links when the server is reached through a proxy or a public
    # name; None means the scheme, host and port it listens on.
    public_url: str | None = None
    # The HMAC key for join tokens. repr=False: a logged config must not hand out the key.
    secret: bytes = field(repr=False)
    # The records database (rooms/records): None is SQLite in data_dir. repr=False: a URL
    # may carry a password.
    database_url: str | None = field(default=None, repr=False)
    # Composer processes at once for the whole server (signaling/http/composing.py).
    max_composers: int = field(default_factory=default_limit)
    guard: GuardLimits = field(default_factory=GuardLimits)
    # Several processes or machines: the Redis of the deployment (RoomStore, the Worker bus)
    # and how many media Worker processes this node starts. None: one process, in memory.
    # repr=False: a URL may carry a password.
    redis_url: str | None = field(default=None, repr=False)
    workers: int = 0
    # How long a session whose socket dropped is held for its client to resume it.
    resume_grace_s: float = 20.0
    # Where events go (signaling/webhooks): none by default.
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    # The bearer token /metrics requires ($TELECONSULT_METRICS_TOKEN); None: loopback only.
    # repr=False: it is a secret.
    metrics_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be 0-65535")
        if self.max_composers < 1:
            raise ValueError("max_composers must be at least 1")
