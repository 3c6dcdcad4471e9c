"""RoomStore in Redis: several signaling processes (on one or many machines) share one room state.

Implements ``rooms.store.RoomStore``; the contract is in that module's docstring. Every mutating
operation is one Lua script: Redis runs a script to the end before serving any other client, so
check-then-act (the last seat, the same identity reconnecting, the last one out) is atomic across
processes, in one round trip, with no WATCH retry loop.

Keys (``P`` is the prefix, ``C`` the consultation id, which ``validate_consultation_id`` keeps to
``[A-Za-z0-9_-]``, so no id can reach into another's keys):

* ``P c:C``        hash: ``kind``, ``created_at``, ``ended`` (0/1), ``ended_at``, ``seq`` (the
                   join counter). Ended, it is the tombstone and carries the TTL.
* ``P c:C:p``      hash: participant id -> JSON (id, identity, name, role, joined_at).
* ``P c:C:order``  sorted set: participant id scored by ``seq`` at join = the join order.
* ``P c:C:mute``   hash: participant id -> two characters, audio and video muted ("0"/"1").
* ``P consultations``  set of consultation ids, for ``consultations()``; members whose tombstone
                   expired are dropped when it is read.

Key names hold only the opaque consultation id; names, identities and roles live in values.
Mute state is kept outside the JSON so a script never re-encodes it: Redis's cjson writes
numbers with 14 significant digits and would round ``joined_at``. Scripts only decode it.

A single Redis (or a Sentinel-managed primary) is assumed: the index set and the consultation's
keys are in different hash slots, which Redis Cluster would refuse in one script.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis

from rooms.consultation import (
    PARTICIPANT_CAP,
    Consultation,
    ConsultationKind,
    Participant,
    validate_consultation_id,
)
from rooms.errors import (
    ConsultationEnded,
    ConsultationFull,
    InvalidConsultationId,
    KindMismatch,
    UnknownParticipant,
)
from rooms.memory import DEFAULT_TOMBSTONE_TTL_S
from rooms.redis_client import connect
from rooms.roles import Role
from rooms.store import MediaKind

# KEYS: meta, parts, order, mute, index
# ARGV: consultation id, kind, created_at, cap, participant id, participant JSON, identity, mute
_JOIN = """
local meta, parts, order, mute, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local kind = ARGV[2]
if redis.call('EXISTS', meta) == 0 then
  -- Nothing lingers from a forgotten consultation, but a fresh start must not inherit it.
  redis.call('DEL', parts, order, mute)
  redis.call('HSET', meta, 'kind', kind, 'created_at', ARGV[3], 'ended', '0', 'seq', '0')
  redis.call('SADD', index, ARGV[1])
else
  if redis.call('HGET', meta, 'ended') == '1' then return {'ended'} end
  if redis.call('HGET', meta, 'kind') ~= kind then return {'kind'} end
end
local replaced_id = false
local present = redis.call('HGETALL', parts)
for i = 1, #present, 2 do
  if cjson.decode(present[i + 1])['identity'] == ARGV[7] then
    replaced_id = present[i]
    break
  end
end
local others = #present / 2
if replaced_id then others = others - 1 end
if others >= tonumber(ARGV[4]) then return {'full'} end
local replaced_json, replaced_mute = false, false
if replaced_id then
  replaced_json = redis.call('HGET', parts, replaced_id)
  replaced_mute = redis.call('HGET', mute, replaced_id)
  redis.call('HDEL', parts, replaced_id)
  redis.call('HDEL', mute, replaced_id)
  redis.call('ZREM', order, replaced_id)
end
local seq = redis.call('HINCRBY', meta, 'seq', 1)
redis.call('HSET', parts, ARGV[5], ARGV[6])
redis.call('HSET', mute, ARGV[5], ARGV[8])
redis.call('ZADD', order, seq, ARGV[5])
return {'ok', redis.call('HGET', meta, 'created_at'), replaced_json, replaced_mute}
"""

# KEYS: meta, parts, order, mute, index.  ARGV: consultation id, participant id
_LEAVE = """
local meta, parts, order, mute, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local gone = redis.call('HGET', parts, ARGV[2])
if not gone then return false end
local gone_mute = redis.call('HGET', mute, ARGV[2])
redis.call('HDEL', parts, ARGV[2])
redis.call('HDEL', mute, ARGV[2])
redis.call('ZREM', order, ARGV[2])
if redis.call('HLEN', parts) == 0 and redis.call('HGET', meta, 'ended') ~= '1' then
  redis.call('DEL', meta, parts, order, mute)
  redis.call('SREM', index, ARGV[1])
end
return {gone, gone_mute}
"""

# KEYS: meta, parts, order, mute.  ARGV: ended_at, tombstone TTL in ms
_END = """
local meta, parts, order, mute = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', meta) == 0 or redis.call('HGET', meta, 'ended') == '1' then
  return {}
end
local out = {}
for _, pid in ipairs(redis.call('ZRANGE', order, 0, -1)) do
  table.insert(out, redis.call('HGET', parts, pid))
  table.insert(out, redis.call('HGET', mute, pid))
end
redis.call('HSET', meta, 'ended', '1', 'ended_at', ARGV[1])
redis.call('DEL', parts, order, mute)
redis.call('PEXPIRE', meta, ARGV[2])
return out
"""

# KEYS: parts, order, mute.  Read-only, but a script so the three keys are read as one snapshot.
_PARTICIPANTS = """
local out = {}
for _, pid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  table.insert(out, redis.call('HGET', KEYS[1], pid))
  table.insert(out, redis.call('HGET', KEYS[3], pid))
end
return out
"""

# KEYS: parts, mute.  ARGV: participant id, 'audio' or 'video', '0' or '1'
_SET_MUTED = """
local pj = redis.call('HGET', KEYS[1], ARGV[1])
if not pj then return false end
local m = redis.call('HGET', KEYS[2], ARGV[1]) or '00'
if ARGV[2] == 'audio' then
  m = ARGV[3] .. string.sub(m, 2, 2)
else
  m = string.sub(m, 1, 1) .. ARGV[3]
end
redis.call('HSET', KEYS[2], ARGV[1], m)
return {pj, m}
"""

# KEYS: index.  ARGV: the meta key prefix.  Drops ids whose tombstone has expired.
_CONSULTATIONS = """
local out = {}
for _, cid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local m = redis.call('HMGET', ARGV[1] .. cid, 'kind', 'created_at', 'ended')
  if m[1] then
    table.insert(out, cid)
    table.insert(out, m[1])
    table.insert(out, m[2])
    table.insert(out, m[3])
  else
    redis.call('SREM', KEYS[1], cid)
  end
end
return out
"""


class RedisRoomStore:
    """Implements ``rooms.store.RoomStore`` on Redis; see there for the contract.

    The store owns ``redis``: ``close()`` closes it. The client may or may not decode
    responses. ``clock`` stamps ``created_at`` (as the in-memory store does); tombstones
    expire on Redis's own clock (``PEXPIRE``), so every node agrees when.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str = "tc:",
        tombstone_ttl_s: float = DEFAULT_TOMBSTONE_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if tombstone_ttl_s <= 0:
            raise ValueError("tombstone_ttl_s must be positive")
        self._redis = redis
        self._prefix = prefix
        self._tombstone_ttl_ms = max(1, round(tombstone_ttl_s * 1000))
        self._clock = clock
        self._index = f"{prefix}consultations"
        self._join = redis.register_script(_JOIN)
        self._leave = redis.register_script(_LEAVE)
        self._end = redis.register_script(_END)
        self._participants = redis.register_script(_PARTICIPANTS)
        self._set_muted = redis.register_script(_SET_MUTED)
        self._consultations = redis.register_script(_CONSULTATIONS)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisRoomStore:
        """``redis://host:6379/0`` (or ``rediss://``, ``unix://``): the store owns the client."""
        return cls(connect(url), **kwargs)

    async def close(self) -> None:
        await self._redis.aclose()

    async def join(
        self, consultation_id: str, kind: ConsultationKind, participant: Participant
    ) -> tuple[Consultation, Participant | None]:
        validate_consultation_id(consultation_id)
        kind = ConsultationKind(kind)
        reply = await self._join(
            keys=[*self._keys(consultation_id), self._index],
            args=[
                consultation_id,
                kind.value,
                repr(float(self._clock())),
                PARTICIPANT_CAP[kind],
                participant.id,
                _encode(participant),
                participant.identity,
                _mute_bits(participant),
            ],
        )
        status = _str(reply[0])
        if status == "ended":
            raise ConsultationEnded("this consultation has ended")
        if status == "kind":
            raise KindMismatch("token is for a different kind of consultation")
        if status == "full":
            raise ConsultationFull(f"consultation is full ({PARTICIPANT_CAP[kind]})")
        consultation = Consultation(consultation_id, kind, created_at=float(reply[1]))
        replaced = _decode(reply[2], reply[3]) if reply[2] is not None else None
        return consultation, replaced

    async def leave(self, consultation_id: str, participant_id: str) -> Participant | None:
        if not _plausible(consultation_id):
            return None
        reply = await self._leave(
            keys=[*self._keys(consultation_id), self._index],
            args=[consultation_id, participant_id],
        )
        return _decode(reply[0], reply[1]) if reply else None

    async def participants(self, consultation_id: str) -> list[Participant]:
        if not _plausible(consultation_id):
            return []
        _, parts, order, mute = self._keys(consultation_id)
        return _decode_pairs(await self._participants(keys=[parts, order, mute]))

    async def get(self, consultation_id: str) -> Consultation | None:
        if not _plausible(consultation_id):
            return None
        meta = self._keys(consultation_id)[0]
        kind, created_at, ended = await self._redis.hmget(meta, ["kind", "created_at", "ended"])
        if kind is None:
            return None
        return _consultation(consultation_id, kind, created_at, ended)

    async def set_muted(
        self, consultation_id: str, participant_id: str, kind: MediaKind, muted: bool
    ) -> Participant:
        if kind not in ("audio", "video"):
            raise ValueError("kind must be 'audio' or 'video'")
        reply = None
        if _plausible(consultation_id):
            _, parts, _, mute = self._keys(consultation_id)
            reply = await self._set_muted(
                keys=[parts, mute], args=[participant_id, kind, "1" if muted else "0"]
            )
        if not reply:
            raise UnknownParticipant("no such participant in this consultation")
        return _decode(reply[0], reply[1])

    async def end(self, consultation_id: str) -> list[Participant]:
        if not _plausible(consultation_id):
            return []
        reply = await self._end(
            keys=self._keys(consultation_id),
            args=[repr(float(self._clock())), self._tombstone_ttl_ms],
        )
        return _decode_pairs(reply)

    async def consultations(self) -> list[Consultation]:
        reply = await self._consultations(keys=[self._index], args=[f"{self._prefix}c:"])
        found = [
            _consultation(_str(reply[i]), reply[i + 1], reply[i + 2], reply[i + 3])
            for i in range(0, len(reply), 4)
        ]
        return sorted(found, key=lambda c: (c.created_at, c.id))

    def _keys(self, consultation_id: str) -> list[str]:
        meta = f"{self._prefix}c:{consultation_id}"
        return [meta, f"{meta}:p", f"{meta}:order", f"{meta}:mute"]


def _plausible(consultation_id: str) -> bool:
    # join() refuses anything else, so such an id is unknown by construction; checking it keeps
    # odd strings (':', '*') out of key names too.
    try:
        validate_consultation_id(consultation_id)
    except InvalidConsultationId:
        return False
    return True


def _str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _mute_bits(p: Participant) -> str:
    return ("1" if p.audio_muted else "0") + ("1" if p.video_muted else "0")


def _encode(p: Participant) -> str:
    return json.dumps(
        {
            "id": p.id,
            "identity": p.identity,
            "name": p.name,
            "role": p.role.value,
            "joined_at": p.joined_at,
        }
    )


def _decode(raw: str | bytes, mute: str | bytes | None) -> Participant:
    d = json.loads(raw)
    bits = _str(mute) if mute is not None else "00"
    return Participant(
        id=d["id"],
        identity=d["identity"],
        name=d["name"],
        role=Role(d["role"]),
        joined_at=d["joined_at"],
        audio_muted=bits[0] == "1",
        video_muted=bits[1] == "1",
    )


def _decode_pairs(reply: Sequence[Any]) -> list[Participant]:
    return [_decode(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]


def _consultation(
    consultation_id: str, kind: str | bytes, created_at: str | bytes, ended: str | bytes | None
) -> Consultation:
    return Consultation(
        consultation_id,
        ConsultationKind(_str(kind)),
        created_at=float(created_at),
        ended=ended is not None and _str(ended) == "1",
    )
