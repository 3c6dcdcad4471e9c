"""CPU time and memory of a process (all its threads), read from /proc."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    wall: float
    cpu: float  # seconds of user + system time, every thread of the process


def cpu_sample(pid: int) -> CpuSample:
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces: split after its closing parenthesis.
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return CpuSample(time.monotonic(), (utime + stime) / _TICK)


def cpu_percent(before: CpuSample, after: CpuSample) -> float:
    """Percent of one core used between two samples."""
    wall = after.wall - before.wall
    return 100.0 * (after.cpu - before.cpu) / wall if wall > 0 else 0.0


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))
