"""The C SFU baseline: Janus 1.1.2 (Debian's package), videoroom plugin over its WebSocket API.

The bench writes Janus a config of its own: the WebSocket transport on 127.0.0.1 only, the
videoroom plugin only, no STUN server. Janus will not gather ICE candidates on a loopback
interface, so inside the bench's private network namespace a veth pair carries 127.0.0.2/32
and ``ice_enforce_list`` names it (see ../shared/TESTING.md); packets to 127.0.0.2 stay on
this host. Janus (libnice) left connectivity checks from 127.0.0.1 unanswered, so in this
scenario the bots gather their candidates on 127.0.0.2 as well. The same aiortc bots
publish the same pre-encoded clip and count frames through the same encoded-frame tap;
only the signaling differs (Janus's JSON API instead of ours).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.sdp import candidate_from_sdp

from bench.harness import (
    JoinTimes,
    Receiver,
    SendLog,
    Window,
    delivery,
    free_port,
    latency_summary,
    loopback_only,
    terminate,
    wait_quiet,
)
from bench.procstat import (
    CpuSample,
    cpu_percent,
    cpu_sample,
    rss_bytes,
    thread_count,
    udp_delta,
)
from media.clips import Clip, ClipTrack
from media.codecs import frame_start_check, is_keyframe, preferred_codecs
from media.config import IceAddress
from media.ice import restrict_host_addresses
from media.tap import install_receiver_tap, on_keyframe_request

log = logging.getLogger("bench")

VETH, VETH_PEER, ICE_IP = "tcj0", "tcj1", "127.0.0.2"
LIBDIR = Path("/usr/lib/x86_64-linux-gnu/janus")
ROOM = 4242


class JanusUnavailable(RuntimeError):
    pass


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=10)


def ensure_veth() -> None:
    """A veth pair carrying 127.0.0.2/32: an interface Janus agrees to gather candidates on."""
    if subprocess.run(["ip", "link", "show", VETH], capture_output=True).returncode == 0:
        return
    try:
        _sh("ip", "link", "add", VETH, "type", "veth", "peer", "name", VETH_PEER)
        _sh("ip", "addr", "add", f"{ICE_IP}/32", "dev", VETH)
        _sh("ip", "link", "set", VETH, "up")
        _sh("ip", "link", "set", VETH_PEER, "up")
    except (subprocess.CalledProcessError, OSError) as exc:
        raise JanusUnavailable(f"cannot create the veth pair for Janus's ICE: {exc}") from None


class JanusProcess:
    def __init__(self, workdir: Path) -> None:
        self.ws_port = free_port()
        self.dir = workdir / f"janus-{self.ws_port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "janus.log"
        self.url = f"ws://127.0.0.1:{self.ws_port}/"
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> None:
        plugins = [p.name for p in (LIBDIR / "plugins").glob("*.so")]
        transports = [p.name for p in (LIBDIR / "transports").glob("*.so")]
        events = [p.name for p in (LIBDIR / "events").glob("*.so")]
        loggers = [p.name for p in (LIBDIR / "loggers").glob("*.so")]
        disable_plugins = ",".join(p for p in plugins if p != "libjanus_videoroom.so")
        disable_transports = ",".join(t for t in transports if t != "libjanus_websockets.so")
        (self.dir / "janus.jcfg").write_text(
            f"""general: {{
    configs_folder = "{self.dir}"
    plugins_folder = "{LIBDIR}/plugins"
    transports_folder = "{LIBDIR}/transports"
    events_folder = "{LIBDIR}/events"
    loggers_folder = "{LIBDIR}/loggers"
    debug_level = 3
    admin_secret = "{secrets.token_hex(8)}"
    session_timeout = 120
}}
media: {{
    rtp_port_range = "40000-60000"
}}
nat: {{
    ice_enforce_list = "{VETH}"
    nice_debug = false
}}
plugins: {{
    disable = "{disable_plugins}"
}}
transports: {{
    disable = "{disable_transports}"
}}
events: {{
    broadcast = false
    disable = "{",".join(events)}"
}}
loggers: {{
    disable = "{",".join(loggers)}"
}}
"""
        )
        (self.dir / "janus.transport.websockets.jcfg").write_text(
            f"""general: {{
    json = "plain"
    ws = true
    ws_port = {self.ws_port}
    ws_ip = "127.0.0.1"
    wss = false
}}
admin: {{
    admin_ws = false
    admin_wss = false
}}
"""
        )
        (self.dir / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("wb") as out:
            return subprocess.Popen(
                ["janus", "-C", str(self.dir / "janus.jcfg"), "-F", str(self.dir)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def start(self, timeout: float = 20.0) -> None:
        if shutil.which("janus") is None:
            raise JanusUnavailable("janus is not installed (apt-get install -y janus)")
        ensure_veth()
        self._write_config()
        self.proc = self._spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise JanusUnavailable(f"janus exited: see {self.log_path}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.ws_port)
                writer.close()
                return
            await asyncio.sleep(0.2)
        await self.stop()
        raise JanusUnavailable(f"janus did not listen in {timeout} s: see {self.log_path}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> CpuSample:
        return cpu_sample(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def threads(self) -> int:
        return thread_count(self.pid)

    async def stop(self) -> None:
        await terminate(self.proc)


class JanusSession:
    """One WebSocket, one Janus session, one videoroom handle: a publisher or a subscriber."""

    _ids = itertools.count(1)

    def __init__(self, url: str) -> None:
        self.url = url
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.session_id: int | None = None
        self.handle_id: int | None = None
        self.pc: RTCPeerConnection | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self.closed = False

    async def open(self) -> None:
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(self.url, protocols=("janus-protocol",))
        self._reader = asyncio.create_task(self._read())
        created = await self.request({"janus": "create"})
        self.session_id = created["data"]["id"]
        attached = await self.request(
            {"janus": "attach", "session_id": self.session_id, "plugin": "janus.plugin.videoroom"}
        )
        self.handle_id = attached["data"]["id"]
        self._keepalive = asyncio.create_task(self._keep_alive())

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                data = msg.json()
                kind = data.get("janus")
                tx = data.get("transaction")
                if kind == "ack" and tx in self._pending and "plugindata" not in data:
                    continue  # an async request's first answer; the event follows
                if tx in self._pending and kind in ("success", "error"):
                    self._pending.pop(tx).set_result(data)
                elif kind == "trickle" and self.pc is not None:
                    await self._remote_candidate(data.get("candidate") or {})
                elif kind in ("event", "hangup", "webrtcup", "media", "slowlink", "detached"):
                    if tx in self._pending:
                        self._pending.pop(tx).set_result(data)
                    else:
                        await self._events.put(data)
        finally:
            self.closed = True
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("janus socket closed"))

    async def _remote_candidate(self, candidate: dict[str, Any]) -> None:
        if candidate.get("completed") or "candidate" not in candidate:
            return
        assert self.pc is not None
        parsed = candidate_from_sdp(candidate["candidate"].removeprefix("candidate:"))
        parsed.sdpMid = candidate.get("sdpMid")
        parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
        with contextlib.suppress(Exception):
            await self.pc.addIceCandidate(parsed)

    async def _keep_alive(self) -> None:
        with contextlib.suppress(Exception):
            while not self.closed:
                await asyncio.sleep(20)
                await self.send({"janus": "keepalive", "session_id": self.session_id})

    async def send(self, payload: dict[str, Any]) -> str:
        assert self.ws is not None
        tx = f"t{next(self._ids)}"
        await self.ws.send_json({**payload, "transaction": tx})
        return tx

    async def request(self, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        tx = f"t{next(self._ids)}"
        self._pending[tx] = future
        assert self.ws is not None
        await self.ws.send_json({**payload, "transaction": tx})
        async with asyncio.timeout(timeout):
            data = await future
        if data.get("janus") == "error":
            raise RuntimeError(f"janus error: {data.get('error')}")
        return data

    async def message(
        self, body: dict[str, Any], jsep: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "janus": "message",
            "session_id": self.session_id,
            "handle_id": self.handle_id,
            "body": body,
        }
        if jsep is not None:
            payload["jsep"] = jsep
        data = await self.request(payload, timeout)
        plugin = data.get("plugindata", {}).get("data", {})
        if plugin.get("error"):
            raise RuntimeError(f"videoroom error: {plugin['error']}")
        return data

    async def trickle_done(self) -> None:
        await self.send(
            {
                "janus": "trickle",
                "session_id": self.session_id,
                "handle_id": self.handle_id,
                "candidate": {"completed": True},
            }
        )

    def new_pc(self) -> RTCPeerConnection:
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        return self.pc

    async def close(self) -> None:
        self.closed = True
        for task in (self._keepalive, self._reader):
            if task is not None:
                task.cancel()
        if self.ws is not None and not self.ws.closed:
            with contextlib.suppress(Exception):
                await self.send({"janus": "destroy", "session_id": self.session_id})
            await self.ws.close()
        if self.pc is not None:
            await self.pc.close()
        if self.http is not None:
            await self.http.close()


async def publish(janus: JanusProcess, clip: Clip, sendlog: SendLog) -> tuple[JanusSession, int]:
    session = JanusSession(janus.url)
    await session.open()
    await session.message(
        {
            "request": "create",
            "room": ROOM,
            "publishers": 4,
            "videocodec": "vp8",
            "bitrate": 0,
            "notify_joining": False,
        }
    )
    joined = await session.message(
        {"request": "join", "ptype": "publisher", "room": ROOM, "display": "publisher"}
    )
    feed = joined["plugindata"]["data"]["id"]
    pc = session.new_pc()
    track = ClipTrack(clip, sendlog.on_sent)
    transceiver = pc.addTransceiver(track, direction="sendonly")
    transceiver.setCodecPreferences(preferred_codecs("video", "VP8"))
    on_keyframe_request(transceiver.sender, track.request_keyframe)
    await pc.setLocalDescription(await pc.createOffer())
    answer = await session.message(
        {"request": "publish", "audio": False, "video": True},
        jsep={"type": "offer", "sdp": pc.localDescription.sdp},
    )
    await pc.setRemoteDescription(RTCSessionDescription(**answer["jsep"]))
    await session.trickle_done()
    session.track = track  # type: ignore[attr-defined]
    return session, feed


class JanusSubscriber:
    def __init__(self, janus: JanusProcess, receiver: Receiver) -> None:
        self.session = JanusSession(janus.url)
        self.receiver = receiver
        self.first_frame_at: float | None = None
        self.first_was_keyframe: bool | None = None
        self.frames = 0

    async def join(self, feed: int) -> None:
        session = self.session
        await session.open()
        pc = session.new_pc()
        pc.on("track", self._on_track)
        offer = await session.message(
            {"request": "join", "ptype": "subscriber", "room": ROOM, "streams": [{"feed": feed}]}
        )
        await pc.setRemoteDescription(RTCSessionDescription(**offer["jsep"]))
        for t in pc.getTransceivers():
            t.direction = "recvonly"
        await pc.setLocalDescription(await pc.createAnswer())
        await session.message(
            {"request": "start", "room": ROOM},
            jsep={"type": "answer", "sdp": pc.localDescription.sdp},
        )
        await session.trickle_done()

    def _on_track(self, track: MediaStreamTrack) -> None:
        pc = self.session.pc
        assert pc is not None
        transceiver = next(t for t in pc.getTransceivers() if t.receiver.track is track)

        def on_frame(codec: RTCRtpCodecParameters, frame: JitterFrame, lost: bool) -> None:
            now = time.monotonic()
            if self.first_frame_at is None:
                self.first_frame_at = now
                self.first_was_keyframe = is_keyframe(codec.mimeType, frame.data)
            self.frames += 1
            self.receiver.on_frame(track.kind, None, frame.data, now)

        install_receiver_tap(transceiver.receiver, on_frame, starts_frame=frame_start_check("VP8"))


async def _join_subscriber(sub: JanusSubscriber, feed: int, joins: JoinTimes) -> None:
    started = time.monotonic()
    try:
        await sub.join(feed)
    except Exception as exc:
        log.warning("janus subscriber failed to join: %s", exc)
        joins.failed += 1
        return
    deadline = time.monotonic() + 10
    while sub.first_frame_at is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if sub.first_frame_at is None:
        joins.no_video += 1
        return
    joins.seconds.append(sub.first_frame_at - started)
    joins.first_was_keyframe += bool(sub.first_was_keyframe)


async def fanout(
    clip: Clip,
    *,
    steps: tuple[int, ...],
    window_s: float,
    settle_s: float,
    workdir: Path,
    quiet_wait_s: float = 30.0,
    deadline: float | None = None,
) -> dict[str, Any]:
    """The fan-out scenario of bench/forwarding.py, against Janus."""
    result: dict[str, Any] = {"mode": "janus", "rows": []}
    janus = JanusProcess(workdir)
    sendlog = SendLog()
    subs: list[JanusSubscriber] = []
    publisher: JanusSession | None = None
    joins = JoinTimes()
    try:
        await janus.start()
        # libnice answered no connectivity check from 127.0.0.1: the bots gather on the veth
        # address too for this scenario (process-wide, restored below).
        restrict_host_addresses((IceAddress(ICE_IP),))
        result["version"] = _janus_version()
        publisher, feed = await publish(janus, clip, sendlog)
        track = publisher.track  # type: ignore[attr-defined]
        ok = await _wait(lambda: track.frames_sent >= 30, 15)
        if not ok:
            raise RuntimeError("the publisher never started sending to Janus")
        await asyncio.sleep(settle_s)
        idle = Window.open(janus)  # type: ignore[arg-type]
        await asyncio.sleep(min(window_s, 5.0))
        idle.close(janus)  # type: ignore[arg-type]
        assert idle.server1 is not None
        result["publisher_only_cpu_pct"] = round(cpu_percent(idle.server0, idle.server1), 2)
        for n in steps:
            if deadline is not None and time.monotonic() > deadline:
                break
            while len(subs) < n:
                sub = JanusSubscriber(janus, Receiver(sendlog))
                subs.append(sub)
                await _join_subscriber(sub, feed, joins)
            await asyncio.sleep(settle_s)
            quiet = await wait_quiet(janus, max_wait_s=quiet_wait_s)
            window = Window.open(janus)  # type: ignore[arg-type]
            await asyncio.sleep(window_s)
            window.close(janus)  # type: ignore[arg-type]
            await asyncio.sleep(0.5)
            assert window.server1 is not None and window.bots1 is not None
            delivered, latencies = delivery(
                sendlog, [s.receiver for s in subs], window.t0, window.t1
            )
            cpu = cpu_percent(window.server0, window.server1)
            row = {
                "subscribers": n,
                "subscribers_alive": sum(not s.session.closed for s in subs),
                "joins_failed": joins.failed,
                "server_cpu_pct": round(cpu, 2),
                "server_cpu_pct_per_stream": round(cpu / n, 3),
                "delivered_pct": None if delivered is None else round(100 * delivered, 2),
                "latency": latency_summary(latencies) if latencies else None,
                "server_rss_mb": round(janus.rss() / 2**20, 1),
                "server_threads": janus.threads(),
                "bots_cpu_pct": round(cpu_percent(window.bots0, window.bots1), 1),
                "udp": udp_delta(window.udp0, window.udp1),
                "others_cpu_pct_before": quiet,
                "others_cpu_pct": window.others_cpu_pct,
                "latency_samples_ms": [
                    round(x * 1000, 2) for x in latencies[:: max(1, len(latencies) // 1000)]
                ],
            }
            result["rows"].append(row)
            log.warning(
                "janus N=%d cpu=%.1f%% delivered=%s p50=%s",
                n,
                cpu,
                row["delivered_pct"],
                (row["latency"] or {}).get("p50_ms"),
            )
            if delivered is None or delivered < 0.5:
                result["stopped"] = f"delivery fell below 50% at N={n}"
                break
    except JanusUnavailable as exc:
        result["error"] = f"Janus unavailable: {exc}"
        log.warning("%s", result["error"])
    except Exception as exc:
        log.exception("janus fan-out failed")
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        result["join"] = joins.summary()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.gather(
                    *(s.session.close() for s in subs),
                    *([publisher.close()] if publisher else []),
                    return_exceptions=True,
                )
        await janus.stop()
        loopback_only()
    return result


async def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


def _janus_version() -> str:
    with contextlib.suppress(Exception):
        out = subprocess.run(["janus", "--version"], capture_output=True, text=True, timeout=5)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    return os.environ.get("JANUS_VERSION", "unknown")
