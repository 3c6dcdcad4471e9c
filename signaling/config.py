"""Everything the server is told at start-up, built by the CLI and held by the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from media.config import MediaConfig


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

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be 0-65535")
