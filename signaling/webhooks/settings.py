"""Where webhooks go and how hard to try: the operator's configuration, checked once.

An endpoint is a URL and a secret of its own. Only http(s) URLs are taken, without
credentials in them (aiohttp would send them as Basic auth to whoever answers); the secret
must be as strong as the join secret, since whoever has it can forge events. The URL is the
operator's, never a participant's: nothing a caller sends reaches these settings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from signaling.keys import weakness


class WebhookConfigError(ValueError):
    """A webhook setting that cannot be used; the message never holds a secret."""


@dataclass(frozen=True)
class WebhookEndpoint:
    url: str
    # repr=False: a logged config must not hand out the key that signs events.
    secret: bytes = field(repr=False)

    @property
    def key(self) -> str:
        """What the outbox and the logs call it: the URL may carry a token of its own."""
        return "wh_" + hashlib.sha256(self.url.encode()).hexdigest()[:16]

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "?"

    @classmethod
    def parse(cls, url: object, secret: object) -> WebhookEndpoint:
        if not isinstance(url, str) or not isinstance(secret, str):
            raise WebhookConfigError("a webhook needs a url and a secret, both text")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WebhookConfigError("a webhook url must be http:// or https:// with a host")
        if parts.username is not None or parts.password is not None:
            raise WebhookConfigError("a webhook url must not carry credentials")
        problem = weakness(secret.strip())
        if problem is not None:
            raise WebhookConfigError(f"the secret of the webhook to {parts.hostname} {problem}")
        return cls(url, secret.strip().encode())


@dataclass(frozen=True, kw_only=True)
class WebhookSettings:
    endpoints: tuple[WebhookEndpoint, ...] = ()
    # One attempt's limit, connecting included.
    timeout_s: float = 10.0
    # Posts in flight at once, for all endpoints together.
    concurrency: int = 4
    # Back-off between attempts doubles from a second up to this, with jitter.
    retry_max_s: float = 600.0
    # A pending event older than this is given up (marked dead, listed by
    # `teleconsult webhooks status`, and put back by `teleconsult webhooks retry`).
    give_up_days: float = 3.0

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise WebhookConfigError("webhook_timeout_s must be positive")
        if self.concurrency < 1:
            raise WebhookConfigError("webhook_concurrency must be at least 1")
        if self.retry_max_s < 1:
            raise WebhookConfigError("webhook_retry_max_s must be at least 1")
        if self.give_up_days <= 0:
            raise WebhookConfigError("webhook_give_up_days must be positive")
        keys = [e.key for e in self.endpoints]
        if len(set(keys)) != len(keys):
            raise WebhookConfigError("the same webhook url is configured twice")
