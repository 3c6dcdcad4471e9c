"""Recent audit entries about one site, for its admin console.

Reads only the end of the log (the newest entries), in a thread: the file can be large and
the event loop forwards media. Entries are shown as recorded: opaque ids and actions only.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

TAIL_BYTES = 512 * 1024


def _read(path: Path, site_id: str, limit: int) -> list[dict[str, Any]]:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.splitlines()
    if len(data) == TAIL_BYTES:
        lines = lines[1:]  # the first is probably cut
    found: list[dict[str, Any]] = []
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        # A partnership's entry names the expert hospital as site and the requester too.
        if isinstance(entry, dict) and site_id in (entry.get("site"), entry.get("requester")):
            found.append(entry)
            if len(found) >= limit:
                break
    return found


async def site_entries(path: Path, site_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` entries about ``site_id``, newest first."""
    return await asyncio.to_thread(_read, path, site_id, limit)
