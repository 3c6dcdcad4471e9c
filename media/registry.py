"""Media Workers in Redis: who is alive and how loaded (LiveKit's node registry), and on
which Worker each consultation's media lives (placement).

Keys (``P`` the prefix; ids are opaque, never a name):

* ``P worker:W``  hash ``load`` (JSON: rooms, sessions, producers, consumers, cpu) and
  ``host``/``pid`` (for operators), with a short TTL refreshed by the Worker's heartbeat: a
  Worker is alive exactly while it exists.
* ``P workers``   set of Worker ids ever seen; members whose key expired are dropped on read.
* ``P placement:C``  the Worker id holding consultation C. Written once by whoever places
  first (a Lua script, so two signaling nodes placing at once agree on one), replaced only
  when its Worker is dead, deleted by the Worker when the consultation's last session goes.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

# A Worker refreshes every HEARTBEAT_S; missing two refreshes and a half, it is dead.
HEARTBEAT_S = 0.5
WORKER_TTL_MS = 1500

# KEYS: placement, worker key prefix.  ARGV: the chosen worker id.
# The current placement stands while its Worker lives; otherwise the caller's choice.
_PLACE = """
local current = redis.call('GET', KEYS[1])
if current and redis.call('EXISTS', KEYS[2] .. current) == 1 then
  return current
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""

# KEYS: placement.  ARGV: worker id.  Deletes the placement only if it is still this one's.
_UNPLACE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: placement.  ARGV: worker id.  Claims a placement nobody holds (Redis came back empty).
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class WorkerLoad:
    rooms: int = 0
    sessions: int = 0
    producers: int = 0
    consumers: int = 0
    cpu: float = 0.0  # % of one core over the last heartbeat interval

    @property
    def score(self) -> float:
        """Lower is emptier. Streams are what cost a Worker; CPU breaks ties."""
        return self.producers + self.consumers + self.cpu / 100.0


def _str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Registry:
    def __init__(self, redis: aioredis.Redis, *, prefix: str = "tc:") -> None:
        self.redis = redis
        self.prefix = prefix
        self._place = redis.register_script(_PLACE)
        self._unplace = redis.register_script(_UNPLACE)
        self._claim = redis.register_script(_CLAIM)

    def _worker_key(self, worker_id: str) -> str:
        return f"{self.prefix}worker:{worker_id}"

    def _placement_key(self, consultation_id: str) -> str:
        return f"{self.prefix}placement:{consultation_id}"

    # ------------------------------------------------------------ Workers

    async def heartbeat(self, worker_id: str, load: WorkerLoad) -> None:
        key = self._worker_key(worker_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "load": json.dumps(load.__dict__),
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                },
            )
            pipe.pexpire(key, WORKER_TTL_MS)
            pipe.sadd(f"{self.prefix}workers", worker_id)
            await pipe.execute()

    async def retire(self, worker_id: str) -> None:
        await self.redis.delete(self._worker_key(worker_id))
        await self.redis.srem(f"{self.prefix}workers", worker_id)

    async def alive(self, worker_id: str) -> bool:
        return bool(await self.redis.exists(self._worker_key(worker_id)))

    async def live_workers(self) -> dict[str, WorkerLoad]:
        ids = [_str(w) for w in await self.redis.smembers(f"{self.prefix}workers")]
        if not ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                pipe.hget(self._worker_key(worker_id), "load")
            loads = await pipe.execute()
        live: dict[str, WorkerLoad] = {}
        gone = []
        for worker_id, raw in zip(ids, loads, strict=True):
            if raw is None:
                gone.append(worker_id)
                continue
            try:
                live[worker_id] = WorkerLoad(**json.loads(raw))
            except (ValueError, TypeError):
                live[worker_id] = WorkerLoad()
        if gone:
            await self.redis.srem(f"{self.prefix}workers", *gone)
        return live

    # ------------------------------------------------------------ placement

    async def placement(self, consultation_id: str) -> str | None:
        value = await self.redis.get(self._placement_key(consultation_id))
        return _str(value) if value is not None else None

    async def place(self, consultation_id: str, *, avoid: frozenset[str] = frozenset()) -> str:
        """The Worker of ``consultation_id``: the current one while it lives, else the
        least-loaded live Worker (not in ``avoid``). Raises LookupError if none is alive."""
        current = await self.placement(consultation_id)
        if current is not None and current not in avoid and await self.alive(current):
            return current
        live = await self.live_workers()
        candidates = {w: load for w, load in live.items() if w not in avoid}
        if not candidates:
            raise LookupError("no media Worker is alive")
        chosen = min(candidates, key=lambda w: (candidates[w].score, w))
        if current is not None and current in avoid:
            await self.unplace(consultation_id, current)
        result = await self._place(
            keys=[self._placement_key(consultation_id), f"{self.prefix}worker:"], args=[chosen]
        )
        return _str(result)

    async def unplace(self, consultation_id: str, worker_id: str) -> None:
        await self._unplace(keys=[self._placement_key(consultation_id)], args=[worker_id])

    async def claim(self, consultation_ids: Mapping[str, Any], worker_id: str) -> None:
        """Re-assert placements a restarted (empty) Redis forgot, for rooms this Worker holds."""
        for consultation_id in consultation_ids:
            await self._claim(keys=[self._placement_key(consultation_id)], args=[worker_id])

    async def pid(self, worker_id: str) -> int | None:
        """The Worker's process id on its host (for operators and tests)."""
        value = await self.redis.hget(self._worker_key(worker_id), "pid")
        return int(value) if value is not None else None
