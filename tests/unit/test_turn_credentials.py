"""TURN credentials: per peer, expiring, never the static password handed to a client."""

from __future__ import annotations

import base64
import hashlib
import hmac

from media.config import IceServer, MediaConfig
from media.turn import ice_servers_for, rest_credential

STUN = IceServer(("stun:stun.example.org",))
STATIC = IceServer(("turn:t.example.org",), "shared", "static-password")


def test_rest_credential_is_coturns_scheme() -> None:
    username, password = rest_credential(b"s3cret", "P1234", 3600, now=1_700_000_000)
    assert username == "1700003600:P1234"
    expected = hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(password) == expected


def test_static_turn_credentials_never_reach_clients() -> None:
    config = MediaConfig(ice_servers=(STUN, STATIC))
    assert ice_servers_for(config, "P1", client=True) == [STUN]
    assert ice_servers_for(config, "worker", client=False) == [STUN, STATIC]


def test_with_a_secret_each_peer_gets_its_own() -> None:
    config = MediaConfig(ice_servers=(STUN, IceServer(("turn:t.example.org",))), turn_secret=b"x")
    _, a = ice_servers_for(config, "Paaaa", client=True)
    _, b = ice_servers_for(config, "Pbbbb", client=True)
    assert a.username and a.username.endswith(":Paaaa") and b.username.endswith(":Pbbbb")
    assert a.credential != b.credential
    assert "static-password" not in repr(ice_servers_for(config, "Pc", client=True))


def test_a_peer_that_needs_no_relay_gets_no_turn_server() -> None:
    config = MediaConfig(ice_servers=(STUN, IceServer(("turn:t.example.org",))), turn_secret=b"x")
    assert ice_servers_for(config, "Pobs", client=True, relay=False) == [STUN]
