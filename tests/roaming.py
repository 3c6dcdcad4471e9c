"""A network namespace whose address changes, as a phone's does going from Wi-Fi to 4G, and
whose UDP can be cut while TCP goes on (root only; tests/isolated.sh's namespace).

    here (the test, the server)                     there (a roaming client)
    10.<n>.1.1/24, 10.<n>.2.1/24  --- one veth ---  10.<n>.1.2/24  (Wi-Fi)
                                                    10.<n>.2.2/24  (4G, after ``move()``)

``there`` has one address at a time and a default route through ``here``'s address on the
same subnet, so the server's first address stays reachable after the move (a phone reaches
the same server from its new network). ``block_udp()`` blackholes every UDP datagram between
the two ends in both directions (policy routing on the protocol, checked before local
delivery), so signaling over TCP stays up while media stops, as behind a firewall that
suddenly drops UDP.

Nothing is named: the far namespace is held by a sleeping child and its veth vanishes with
it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import time
from collections.abc import Iterator, Sequence

_counter = itertools.count()
_BLACKHOLE_TABLE = "97"
_RULE_PREF = "10"


def _run(cmd: Sequence[str]) -> None:
    subprocess.run(list(cmd), check=True, capture_output=True, timeout=10)


def available() -> bool:
    """Root, iproute2 and nsenter, in a namespace of our own (never the machine's)."""
    from tests.e2e.helpers import loopback_only  # the caller's namespace has only lo

    if os.geteuid() != 0 or not loopback_only():
        return False
    return all(
        subprocess.run(["which", tool], capture_output=True).returncode == 0
        for tool in ("ip", "nsenter", "unshare")
    )


class RoamingLink:
    def __init__(self, index: int) -> None:
        self.index = index
        self.here = f"10.{index}.1.1"
        self.here_second = f"10.{index}.2.1"
        self.there = f"10.{index}.1.2"
        self._here_if, self._there_if = f"tcr{index}h", f"tcr{index}t"
        self._proc = subprocess.Popen(["unshare", "-n", "sleep", "3600"])
        deadline = time.monotonic() + 5
        mine = os.readlink("/proc/self/ns/net")
        while os.readlink(f"/proc/{self._proc.pid}/ns/net") == mine:
            if time.monotonic() > deadline:
                raise RuntimeError("unshare -n did not start")
            time.sleep(0.01)
        self.there_prefix = ["nsenter", "-t", str(self._proc.pid), "-n"]
        self._blocked = False

    def _there(self, cmd: Sequence[str]) -> None:
        _run([*self.there_prefix, *cmd])

    def up(self) -> None:
        here, there = self._here_if, self._there_if
        _run(["ip", "link", "add", here, "type", "veth", "peer", "name", there])
        _run(["ip", "link", "set", there, "netns", str(self._proc.pid)])
        _run(["ip", "addr", "add", f"{self.here}/24", "dev", here])
        _run(["ip", "addr", "add", f"{self.here_second}/24", "dev", here])
        _run(["ip", "link", "set", here, "up"])
        self._there(["ip", "link", "set", "lo", "up"])
        self._there(["ip", "addr", "add", f"{self.there}/24", "dev", there])
        self._there(["ip", "link", "set", there, "up"])
        self._there(["ip", "route", "add", "default", "via", self.here])

    def move(self) -> str:
        """The client's address changes (its old one is gone); returns the new one."""
        old, new = self.there, f"10.{self.index}.2.2"
        if old == new:
            raise RuntimeError("already moved")
        self._there(["ip", "addr", "del", f"{old}/24", "dev", self._there_if])
        self._there(["ip", "addr", "add", f"{new}/24", "dev", self._there_if])
        self._there(["ip", "route", "replace", "default", "via", self.here_second])
        self.there = new
        return new

    def block_udp(self, blocked: bool = True) -> None:
        """UDP between the two ends dropped (both ways) or let through again; TCP untouched."""
        if blocked == self._blocked:
            return
        for prefix in ([], self.there_prefix):
            peer = self.there if not prefix else self.here
            if blocked:
                _run([*prefix, "ip", "route", "replace", "blackhole", "default",
                      "table", _BLACKHOLE_TABLE])  # fmt: skip
                # Before the local table, or a datagram for a local address is delivered.
                _run([*prefix, "ip", "rule", "add", "pref", _RULE_PREF, "from", peer,
                      "ipproto", "udp", "lookup", _BLACKHOLE_TABLE])  # fmt: skip
                with contextlib.suppress(subprocess.CalledProcessError):
                    _run([*prefix, "ip", "rule", "del", "pref", "0"])
                    _run([*prefix, "ip", "rule", "add", "pref", "100", "lookup", "local"])
            else:
                _run([*prefix, "ip", "rule", "del", "pref", _RULE_PREF])
        self._blocked = blocked

    def shape(self, rate_kbit: int, latency_ms: int = 500) -> None:
        """Limit what reaches ``there`` to ``rate_kbit`` (tbf on our end of the veth; what
        does not fit in ``latency_ms`` of queue is dropped, as on a congested link)."""
        rate, latency = f"{rate_kbit}kbit", f"{latency_ms}ms"
        _run(["tc", "qdisc", "replace", "dev", self._here_if, "root", "tbf",
              "rate", rate, "burst", "16kbit", "latency", latency])  # fmt: skip

    def run_there(self, cmd: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*self.there_prefix, *cmd], **kwargs)  # type: ignore[call-overload]

    def down(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.block_udp(False)
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            _run(["ip", "link", "del", self._here_if])


@contextlib.contextmanager
def roaming_link() -> Iterator[RoamingLink]:
    """A far namespace on a veth, torn down on exit."""
    link = RoamingLink(index=(os.getpid() + next(_counter)) % 100 + 120)
    try:
        link.up()
        yield link
    finally:
        link.down()
