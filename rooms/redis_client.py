"""One way to open a Redis client, for every process of a cluster.

A Redis that restarts closes every pooled connection; without a retry the first command on
each of them fails ("Connection closed by server") although Redis is back. A command that
fails on a broken connection is sent again on a fresh one, a few times, quickly; a Redis
that is really down still fails fast, and callers bound their own waits.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def connect(url: str, **kwargs: Any) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        **kwargs,
    )
