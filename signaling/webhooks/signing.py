"""How a webhook is signed: HMAC-SHA256 over ``<timestamp>.<body>`` with the endpoint's secret.

The timestamp (Unix seconds, ``X-Teleconsult-Timestamp``) is inside the MAC, so a receiver
that refuses stale timestamps (docs/webhooks.md: five minutes) cannot be fed a recorded
request later; the event id (``X-Teleconsult-Event-Id``) lets it drop a repeat, since
delivery is at least once.
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP = "X-Teleconsult-Timestamp"
SIGNATURE = "X-Teleconsult-Signature"
EVENT_ID = "X-Teleconsult-Event-Id"
EVENT_TYPE = "X-Teleconsult-Event-Type"
AUDIT_HEAD = "X-Teleconsult-Audit-Head"
VERSION = "v1"


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Teleconsult-Signature`` value: ``v1=<hex>``."""
    mac = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return f"{VERSION}={mac.hexdigest()}"
