"""A webhook receiver for teleconsult events: the hospital's side (docs/webhooks.md).

Run it with the endpoint's secret in the environment:

    TELECONSULT_WEBHOOK_SECRET=... python3 webhook_receiver.py --port 8099

and configure the server with
``webhooks = [{ url = "http://this-host:8099/teleconsult/events", secret = "..." }]``.
It needs Python 3.11 and aiohttp; ``verify`` alone is the standard library only.

What every receiver must do, in this order:
1. check the signature over the *raw* body (parse after, never before);
2. refuse a timestamp more than five minutes from its own clock (a recorded request
   replayed later fails here: the timestamp is inside the signature);
3. drop an event id it has already taken (delivery is at least once: answer 2xx again);
4. answer 2xx quickly, then do the work: anything else (or no answer within the server's
   timeout) is retried later, with the same event id.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import time
from typing import Any

TOLERANCE_S = 5 * 60


class Refused(Exception):
    """Not from the server, or too old: answer 401 and drop it."""


def verify(secret: bytes, headers: Any, body: bytes, now: float | None = None) -> dict[str, Any]:
    """The event, if ``body`` was signed with ``secret`` within the last five minutes."""
    timestamp = headers.get("X-Teleconsult-Timestamp", "")
    signature = headers.get("X-Teleconsult-Signature", "")
    expected = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    # Constant time: a comparison that stops at the first wrong character leaks how many
    # were right.
    if not hmac.compare_digest(signature.encode(), f"v1={expected}".encode()):
        raise Refused("bad signature")
    if not timestamp.isdigit():
        raise Refused("no timestamp")
    if abs((time.time() if now is None else now) - int(timestamp)) > TOLERANCE_S:
        raise Refused("stale timestamp")
    event = json.loads(body)
    if event.get("id") != headers.get("X-Teleconsult-Event-Id"):
        raise Refused("event id mismatch")
    return event


class Seen:
    """Event ids taken so far. A real receiver keeps them in its database (a unique key on
    the id, in the transaction that stores the event) for longer than the server retries."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def first_time(self, event_id: str) -> bool:
        if event_id in self.ids:
            return False
        self.ids.add(event_id)
        return True


def main() -> None:
    from aiohttp import web

    parser = argparse.ArgumentParser(description="Receive teleconsult webhooks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    secret = os.environ["TELECONSULT_WEBHOOK_SECRET"].strip().encode()
    seen = Seen()

    async def events(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = verify(secret, request.headers, body)
        except (Refused, ValueError) as exc:
            return web.Response(status=401, text=str(exc))
        if seen.first_time(event["id"]):
            # Ids only: look the consultation and identity up in your own records.
            print(event["type"], event["consultation"], event.get("participant", ""))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/teleconsult/events", events)
    web.run_app(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
