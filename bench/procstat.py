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


def udp_counters() -> dict[str, int]:
    """This network namespace's UDP counters (RcvbufErrors: datagrams dropped by a full socket)."""
    try:
        with open("/proc/self/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:], strict=False)}


def udp_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    keys = ("InDatagrams", "RcvbufErrors", "SndbufErrors", "InErrors")
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys}


def udp_socket_drops(pids: dict[str, int]) -> dict[str, dict[str, int]]:
    """Per process: its UDP sockets, datagrams they dropped (full buffer), bytes queued now.

    /proc/net/udp counts drops per socket; a socket belongs to a process when one of the
    process's descriptors names its inode.
    """
    owner: dict[str, str] = {}
    for name, pid in pids.items():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owner[target[8:-1]] = name
    out = {name: {"sockets": 0, "drops": 0, "rx_queued_bytes": 0} for name in pids}
    try:
        with open("/proc/self/net/udp") as f:
            next(f)
            for line in f:
                cols = line.split()
                name = owner.get(cols[9])
                if name is None:
                    continue
                out[name]["sockets"] += 1
                out[name]["drops"] += int(cols[-1])
                out[name]["rx_queued_bytes"] += int(cols[4].split(":")[1], 16)
    except OSError:
        pass
    return out


@dataclass(frozen=True)
class MachineSample:
    wall: float
    busy: float  # seconds of non-idle CPU time, all cores, every process


def machine_sample() -> MachineSample:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return MachineSample(time.monotonic(), (sum(fields[:8]) - idle) / _TICK)


def others_percent(
    m0: MachineSample, m1: MachineSample, *ours: tuple[CpuSample, CpuSample]
) -> float:
    """CPU used by every other process on the machine, in % of one core."""
    wall = m1.wall - m0.wall
    if wall <= 0:
        return 0.0
    mine = sum(b.cpu - a.cpu for a, b in ours)
    return max(0.0, 100.0 * ((m1.busy - m0.busy) - mine) / wall)
