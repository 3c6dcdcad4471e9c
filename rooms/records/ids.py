"""Opaque record ids: a prefix that says what it names, then 64 random bits in hex.

Ids carry nothing about the person or site they name, so they are what logs, the audit log,
metrics and URLs use.
"""

from __future__ import annotations

import re
import secrets

_ID = re.compile(r"^[a-z]{2,6}_[0-9a-f]{16}$")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def looks_like_id(value: str) -> bool:
    """Whether ``value`` has the shape of an id (cheap filter before a database look-up)."""
    return bool(_ID.match(value))
