"""TURN credentials: minted per peer from a shared secret, never one password for all.

coturn's REST scheme (``use-auth-secret`` with ``static-auth-secret``): the username is
``<expiry>:<subject>`` and the password is base64(HMAC-SHA1(secret, username)). coturn
recomputes the password and refuses a username whose expiry has passed, so a credential
handed to one participant is theirs alone and goes stale by itself; nothing is stored.

A static username/password is for the Worker's own use only: handed to clients it would
let any participant, observers and guests included, relay through the TURN server for as
long as the password lives.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from media.config import IceServer, MediaConfig


def rest_credential(
    secret: bytes, subject: str, ttl_s: int, *, now: float | None = None
) -> tuple[str, str]:
    """(username, password) valid for ``ttl_s`` seconds under coturn's REST scheme."""
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    expiry = int(time.time() if now is None else now) + ttl_s
    username = f"{expiry}:{subject}"
    digest = hmac.new(secret, username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def _is_turn(server: IceServer) -> bool:
    return any(url.startswith(("turn:", "turns:")) for url in server.urls)


def ice_servers_for(
    config: MediaConfig, subject: str, *, client: bool, relay: bool = True
) -> list[IceServer]:
    """The STUN/TURN servers one peer gets, with credentials of its own.

    ``subject`` names the peer in the TURN server's logs: an opaque participant id, never a
    name. A client never gets a TURN server for which no per-peer credential can be minted,
    and none at all when ``relay`` is false (a peer that does not need one).
    """
    out: list[IceServer] = []
    for server in config.ice_servers:
        if not _is_turn(server):
            out.append(IceServer(server.urls))
        elif not relay:
            continue
        elif config.turn_secret is not None:
            username, password = rest_credential(
                config.turn_secret, subject, config.turn_credential_ttl_s
            )
            out.append(IceServer(server.urls, username, password))
        elif not client and server.username is not None:
            out.append(server)
    return out
