"""Signaling nodes on one Redis: which node is alive, and which one owns a consultation's Room.

A consultation's live state (its ``Room``) has one owner at a time: the node that holds the
claim ``P owner:C``. The claim is taken atomically (exactly one winner when two nodes race),
carries a TTL and is renewed by the owner's heartbeat while its Room exists; a node that
dies stops renewing, the claim expires and the next join anywhere takes the Room over.

Keys (``P`` the prefix, ``C`` a consultation id, ``N`` a node id):

* ``P node:N``   a live signaling node (its host and pid); TTL ``NODE_TTL_MS``, renewed
  every ``HEARTBEAT_S``.
* ``P owner:C``  the node owning consultation C's Room; TTL ``CLAIM_TTL_MS``, renewed with
  the heartbeat.
* ``P nodes-since``  when a node first saw this Redis (ms, Redis's clock): for ``SETTLE_MS``
  after that, a consultation nobody claims is not taken, so that after a Redis restart the
  nodes still serving Rooms claim them again before any other node can.

Every Redis round trip here is bounded: while Redis is unreachable a claim retries until
``REDIS_WAIT_S`` and then fails with ``NodeUnavailable`` (the join gets a typed error).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
NODE_TTL_MS = 4000
CLAIM_TTL_MS = 4000
# How long a join waits for an unreachable Redis before it is refused.
REDIS_WAIT_S = 15.0

# After Redis starts (empty: a restart forgets every claim), unowned consultations are not
# claimed for this long, so the owners, still serving their Rooms, claim them again first.
SETTLE_MS = 2500

# KEYS: owner key, since key.  ARGV: node id, ttl ms, settle ms.  The current owner, taking it
# if there is none; nil while Redis has not been up for ``settle ms`` (try again shortly).
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current then return current end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local since = redis.call('GET', KEYS[2])
if not since then
  redis.call('SET', KEYS[2], now)
  since = now
end
if now - tonumber(since) < tonumber(ARGV[3]) then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""

# KEYS: since key.  Marks when this Redis was first seen by a node.
_SINCE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
return 1
"""

# KEYS: owner key.  ARGV: node id, ttl ms.  1 renewed, 2 taken again (Redis had forgotten
# it: restarted), 0 another node holds it now.
_RENEW = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""

# KEYS: owner key.  ARGV: node id.  Let go only of our own claim.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class NodeUnavailable(Exception):
    """Redis, or the node owning a consultation, did not answer in time."""


def _str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Nodes:
    """This node's view of the others: its heartbeat, claims on consultations, liveness."""

    def __init__(self, redis: aioredis.Redis, node_id: str, *, prefix: str = "tc:") -> None:
        self.redis = redis
        self.node_id = node_id
        self.prefix = prefix
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._since = redis.register_script(_SINCE)

    def _node_key(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    def _owner_key(self, consultation_id: str) -> str:
        return f"{self.prefix}owner:{consultation_id}"

    async def beat(self) -> None:
        await self._since(keys=[f"{self.prefix}nodes-since"])
        key = self._node_key(self.node_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"host": socket.gethostname(), "pid": os.getpid()})
            pipe.pexpire(key, NODE_TTL_MS)
            await pipe.execute()

    async def retire(self) -> None:
        await self.redis.delete(self._node_key(self.node_id))

    async def alive(self, node_id: str) -> bool:
        return bool(await self.redis.exists(self._node_key(node_id)))

    async def pid(self, node_id: str) -> int | None:
        value = await self.redis.hget(self._node_key(node_id), "pid")
        return int(value) if value is not None else None

    async def owner(self, consultation_id: str) -> str | None:
        value = await self.redis.get(self._owner_key(consultation_id))
        return _str(value) if value is not None else None

    async def claim(self, consultation_id: str) -> str:
        """The node owning ``consultation_id``, this one if nobody did. Waits for an
        unreachable Redis up to ``REDIS_WAIT_S``, then raises NodeUnavailable."""
        deadline = time.monotonic() + REDIS_WAIT_S
        while True:
            try:
                result = await self._claim(
                    keys=[self._owner_key(consultation_id), f"{self.prefix}nodes-since"],
                    args=[self.node_id, CLAIM_TTL_MS, SETTLE_MS],
                )
                if result is not None:
                    return _str(result)
                problem = "Redis has just started"
            except (RedisError, OSError) as exc:
                problem = f"Redis is unreachable: {exc}"
            if time.monotonic() > deadline:
                raise NodeUnavailable(problem)
            await asyncio.sleep(0.3)

    async def try_claim(self, consultation_id: str) -> str | None:
        """One attempt: the owner (this node if nobody was), None while Redis settles."""
        result = await self._claim(
            keys=[self._owner_key(consultation_id), f"{self.prefix}nodes-since"],
            args=[self.node_id, CLAIM_TTL_MS, SETTLE_MS],
        )
        return None if result is None else _str(result)

    async def renew(self, consultation_ids: Iterable[str]) -> tuple[list[str], list[str]]:
        """Renew this node's claims: (taken again after Redis forgot them, lost to others)."""
        retaken: list[str] = []
        lost: list[str] = []
        for consultation_id in consultation_ids:
            result = await self._renew(
                keys=[self._owner_key(consultation_id)], args=[self.node_id, CLAIM_TTL_MS]
            )
            if int(result) == 2:
                retaken.append(consultation_id)
            elif int(result) == 0:
                lost.append(consultation_id)
        return retaken, lost

    async def release(self, consultation_id: str) -> None:
        await self._release(keys=[self._owner_key(consultation_id)], args=[self.node_id])
