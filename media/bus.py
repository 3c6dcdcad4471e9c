"""The Worker bus over Redis: a WorkerClient for signaling nodes, and the Worker process's
end of it. Media never passes through Redis, only commands, replies and events.

Channels (``P`` the prefix):

* ``P bus:w:W``   commands to Worker W: ``{id, node, op, cid, args}``.
* ``P bus:n:N``   replies to signaling node N: ``{id, ok, result}`` or ``{id, ok: false, code,
  message}``.
* ``P bus:c:C``   events of consultation C, to every node with participants in it:
  ``{ev, ...}`` (an offer, a Producer opened or closed, a failed session, a notice, a
  recording event, quality samples). A node keeps only what concerns its own participants.

Every call has a deadline: a Worker that does not answer in time is a typed error
(``worker_unavailable``), never a hang. A malformed message is logged and dropped. A Worker
whose heartbeat stops is replaced: its consultations are placed on a live Worker and the
Rooms are told (``media_lost``) so they open their participants' sessions again there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from media.client import (
    EXTRA_SOURCES,
    ExtraSource,
    Flow,
    Histogram,
    Kind,
    ProducerInfo,
    QualitySample,
    SlotDescription,
    Source,
    WorkerEvents,
    WorkerMetrics,
    WorkerStats,
)
from media.config import MediaConfig, VideoCodec
from media.errors import MediaError
from media.registry import HEARTBEAT_S, Registry, WorkerLoad
from media.worker import RecordingFactory, Worker

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 5.0
# While Redis itself is unreachable a call retries until this deadline: calls in progress do
# not need Redis (media does not pass through it), new joins wait for it to come back.
REDIS_WAIT_S = 10.0
MONITOR_S = 0.5
OPS = frozenset(
    {
        "open_session",
        "close_session",
        "answer",
        "candidate",
        "pause_producers",
        "pause_consumers",
        "follow_speaker",
        "publish_extra",
        "unpublish_extra",
        "start_recording",
        "recording_consent",
        "stop_recording",
        "stats",
        "metrics",
    }
)


def new_node_id(kind: str) -> str:
    return f"{kind}-{os.getpid()}-{secrets.token_hex(3)}"


def _slots(slots: list[SlotDescription]) -> list[dict[str, Any]]:
    return [s.__dict__ for s in slots]


def _producer(info: ProducerInfo) -> dict[str, Any]:
    return info.__dict__


_QUALITY_FIELDS = ("loss_in", "loss_out", "rtt_ms", "fps_in", "fps_out", "kbps_in", "kbps_out")


def _quality_sample(d: dict[str, Any]) -> QualitySample:
    """From the bus: numbers or None, whatever was sent (ValueError/TypeError otherwise)."""
    values = {name: None if d.get(name) is None else float(d[name]) for name in _QUALITY_FIELDS}
    return QualitySample(
        participant_id=str(d["participant_id"]),
        at=float(d["at"]),
        interval_s=float(d["interval_s"]),
        **values,  # type: ignore[arg-type]
    )


def _histogram(d: Any) -> Histogram | None:
    if d is None:
        return None
    return Histogram(
        bounds=tuple(float(b) for b in d["bounds"]),
        counts=tuple(int(c) for c in d["counts"]),
        count=int(d["count"]),
        sum=float(d["sum"]),
    )


def _counts(d: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in dict(d or {}).items()}


def _flow(d: dict[str, Any]) -> Flow:
    direction, kind = d["direction"], d["kind"]
    if direction not in ("inbound", "outbound") or kind not in ("audio", "video"):
        raise ValueError("unknown flow")
    names = ("packets", "bytes", "packets_lost", "nacks", "plis")
    return Flow(direction, kind, **{name: int(d.get(name, 0)) for name in names})


def _worker_metrics(d: dict[str, Any]) -> WorkerMetrics:
    return WorkerMetrics(
        worker=str(d["worker"]),
        rooms=int(d["rooms"]),
        sessions=int(d["sessions"]),
        producers=_counts(d.get("producers")),
        consumers=_counts(d.get("consumers")),
        flows=tuple(_flow(f) for f in d.get("flows") or ()),
        round_trip=_histogram(d.get("round_trip")),
        loop_lag=_histogram(d.get("loop_lag")),
        recordings=int(d.get("recordings", 0)),
        recording_bytes=int(d.get("recording_bytes", 0)),
        recording_dropped_frames=int(d.get("recording_dropped_frames", 0)),
        recording_failures=_counts(d.get("recording_failures")),
    )


# ================================================================ the Worker process's end


class WorkerServer:
    """Serves one Worker on the bus: commands in, replies and events out, a heartbeat."""

    def __init__(
        self,
        redis: aioredis.Redis,
        config: MediaConfig,
        *,
        worker_id: str | None = None,
        prefix: str = "tc:",
        recordings: RecordingFactory | None = None,
    ) -> None:
        self.redis = redis
        self.id = worker_id or new_node_id("worker")
        self.prefix = prefix
        self.registry = Registry(redis, prefix=prefix)
        self.worker = Worker(config, self, recordings=recordings)
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._lanes: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cpu_at = (time.monotonic(), time.process_time())
        self.stopping = asyncio.Event()

    # ------------------------------------------------------------ WorkerEvents: publish

    def _emit(self, consultation_id: str, event: dict[str, Any]) -> None:
        payload = json.dumps(event)
        task = asyncio.get_running_loop().create_task(
            self.redis.publish(f"{self.prefix}bus:c:{consultation_id}", payload)
        )
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("publishing an event failed: %s", task.exception())

    def offer(
        self, consultation_id: str, participant_id: str, sdp: str, slots: list[SlotDescription]
    ) -> None:
        self._emit(
            consultation_id,
            {"ev": "offer", "pid": participant_id, "sdp": sdp, "slots": _slots(slots)},
        )

    def producer_opened(self, consultation_id: str, producer: ProducerInfo) -> None:
        self._emit(consultation_id, {"ev": "producer_opened", "producer": _producer(producer)})

    def producer_closed(self, consultation_id: str, producer: ProducerInfo) -> None:
        self._emit(consultation_id, {"ev": "producer_closed", "producer": _producer(producer)})

    def session_failed(self, consultation_id: str, participant_id: str, reason: str) -> None:
        self._emit(
            consultation_id, {"ev": "session_failed", "pid": participant_id, "reason": reason}
        )

    def notice(self, consultation_id: str, participant_id: str, code: str, message: str) -> None:
        self._emit(
            consultation_id,
            {"ev": "notice", "pid": participant_id, "code": code, "message": message},
        )

    def recording_event(self, consultation_id: str, event: dict[str, Any]) -> None:
        self._emit(consultation_id, {"ev": "recording", "event": event})

    def media_lost(self, consultation_id: str, reason: str) -> None:  # pragma: no cover
        """Only a client sees a Worker die; a Worker never reports its own loss."""

    def quality(self, consultation_id: str, samples: list[QualitySample]) -> None:
        self._emit(
            consultation_id,
            {"ev": "quality", "samples": [dataclasses.asdict(s) for s in samples]},
        )

    # ------------------------------------------------------------ serving

    async def run(self) -> None:
        """Until ``stopping`` is set: heartbeat and serve commands."""
        heartbeat = asyncio.create_task(self._heartbeat(), name="worker-heartbeat")
        self.worker.start_measuring()
        try:
            await self._serve_commands()
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            for lane in self._lanes.values():
                lane.cancel()
            await self.worker.close()
            with contextlib.suppress(RedisError, OSError):
                await self.registry.retire(self.id)

    def load(self) -> WorkerLoad:
        stats = self.worker.stats()
        now, cpu = time.monotonic(), time.process_time()
        then, cpu_then = self._cpu_at
        self._cpu_at = (now, cpu)
        share = 100.0 * (cpu - cpu_then) / max(now - then, 1e-6)
        return WorkerLoad(
            rooms=stats.rooms,
            sessions=stats.sessions,
            producers=stats.producers,
            consumers=stats.consumers,
            cpu=round(share, 1),
        )

    async def _heartbeat(self) -> None:
        while not self.stopping.is_set():
            try:
                await self.registry.heartbeat(self.id, self.load())
                # A Redis that restarted empty forgot where our rooms are: say it again.
                await self.registry.claim(self.worker.rooms, self.id)
            except (RedisError, OSError) as exc:
                log.warning("worker %s: heartbeat failed (%s); media goes on", self.id, exc)
            await asyncio.sleep(HEARTBEAT_S)

    async def _serve_commands(self) -> None:
        channel = f"{self.prefix}bus:w:{self.id}"
        while not self.stopping.is_set():
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(channel)
                    log.info("worker %s: serving on %s", self.id, channel)
                    while not self.stopping.is_set():
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        if message is not None:
                            self._accept(message.get("data"))
            except (RedisError, OSError) as exc:
                # Redis went away: the media does not need it. Try again shortly.
                log.warning("worker %s: bus lost (%s); retrying", self.id, exc)
                await asyncio.sleep(0.5)

    def _accept(self, data: Any) -> None:
        try:
            command = json.loads(data)
            if not isinstance(command, dict) or command.get("op") not in OPS:
                raise ValueError("unknown op")
            consultation_id = str(command["cid"])
            str(command["id"]), str(command["node"])
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("worker %s: malformed command dropped: %s", self.id, exc)
            return
        # One lane per consultation: its commands run in order (an answer after the session
        # that awaits it), and a slow one does not hold up other consultations.
        queue = self._queues.get(consultation_id)
        if queue is None:
            queue = self._queues[consultation_id] = asyncio.Queue()
            self._lanes[consultation_id] = asyncio.create_task(
                self._lane(consultation_id, queue), name=f"lane-{consultation_id}"
            )
        queue.put_nowait(command)

    async def _lane(self, consultation_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            try:
                command = await asyncio.wait_for(queue.get(), timeout=30.0)
            except TimeoutError:
                if queue.empty():
                    del self._queues[consultation_id]
                    del self._lanes[consultation_id]
                    return
                continue
            reply: dict[str, Any] = {"id": command["id"]}
            try:
                reply["result"] = await self._run(consultation_id, command)
                reply["ok"] = True
            except MediaError as exc:
                reply.update(ok=False, code=exc.code, message=exc.message)
            except Exception as exc:
                log.exception("worker %s: %s failed", self.id, command.get("op"))
                reply.update(ok=False, code="internal", message=type(exc).__name__)
            try:
                await self.redis.publish(f"{self.prefix}bus:n:{command['node']}", json.dumps(reply))
            except (RedisError, OSError) as exc:
                log.warning("worker %s: reply lost (%s)", self.id, exc)

    async def _run(self, cid: str, command: dict[str, Any]) -> Any:
        op, a = command["op"], command.get("args") or {}
        worker = self.worker
        if op == "open_session":
            codecs = a.get("video_codecs")
            worker.open_session(
                cid,
                str(a["pid"]),
                publish=tuple(a.get("publish") or ()),
                subscribe=bool(a.get("subscribe")),
                video_codecs=frozenset(codecs) if codecs is not None else None,
            )
        elif op == "close_session":
            await worker.close_session(cid, str(a["pid"]))
            if worker.room(cid) is None:
                await self.registry.unplace(cid, self.id)
        elif op == "answer":
            await worker.answer(cid, str(a["pid"]), str(a["sdp"]))
        elif op == "candidate":
            await worker.candidate(
                cid, str(a["pid"]), a.get("candidate"), a.get("sdp_mid"), a.get("sdp_mline_index")
            )
        elif op == "pause_producers":
            source = a.get("source")
            if source is not None and source not in ("camera", "microphone", *EXTRA_SOURCES):
                raise MediaError("unexpected", "unknown source")
            worker.pause_producers(cid, str(a["pid"]), a["kind"], bool(a["paused"]), source)
        elif op in ("publish_extra", "unpublish_extra"):
            if a.get("source") not in EXTRA_SOURCES:
                raise MediaError("unexpected", "unknown source")
            getattr(worker, op)(cid, str(a["pid"]), a["source"])
        elif op == "pause_consumers":
            worker.pause_consumers(cid, str(a["pid"]), a["kind"], bool(a["paused"]))
        elif op == "follow_speaker":
            worker.follow_speaker(cid, str(a["pid"]), bool(a["follow"]))
        elif op == "start_recording":
            worker.start_recording(
                cid,
                str(a["recording_id"]),
                dict(a["roles"]),
                {k: bool(v) for k, v in dict(a["consents"]).items()},
                resume=bool(a.get("resume")),
            )
        elif op == "recording_consent":
            worker.recording_consent(cid, str(a["pid"]), bool(a["granted"]), a.get("role"))
        elif op == "stop_recording":
            worker.stop_recording(cid, str(a["reason"]))
        elif op == "stats":
            return worker.stats().__dict__
        elif op == "metrics":
            return dataclasses.asdict(worker.metrics(self.id))
        return None


# ================================================================ the signaling node's end


class RedisWorkerClient:
    """Implements ``media.client.WorkerClient`` over Redis, for one signaling node."""

    def __init__(
        self,
        redis: aioredis.Redis,
        events: WorkerEvents,
        *,
        node_id: str | None = None,
        prefix: str = "tc:",
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        self.redis = redis
        self.node_id = node_id or new_node_id("node")
        self.prefix = prefix
        self.registry = Registry(redis, prefix=prefix)
        self._events = events
        self._timeout = call_timeout_s
        self._pending: dict[str, asyncio.Future[Any]] = {}
        # Consultations with sessions opened from this node: their Worker and how many.
        self._workers: dict[str, str] = {}
        self._sessions: dict[str, set[str]] = {}
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="bus-listener")
        self._monitor = asyncio.create_task(self._watch_workers(), name="bus-monitor")
        async with asyncio.timeout(REDIS_WAIT_S):
            await self._subscribed.wait()

    async def close(self) -> None:
        for task in (self._monitor, self._listener):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for future in self._pending.values():
            if not future.done():
                future.cancel()

    # ------------------------------------------------------------ listening

    async def _listen(self) -> None:
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    self._pubsub = pubsub
                    channels = [f"{self.prefix}bus:n:{self.node_id}"]
                    channels += [f"{self.prefix}bus:c:{cid}" for cid in self._sessions]
                    await pubsub.subscribe(*channels)
                    self._subscribed.set()
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        if message is not None:
                            self._dispatch(_text(message.get("channel")), message.get("data"))
            except (RedisError, OSError) as exc:
                self._pubsub = None
                log.warning("node %s: bus lost (%s); retrying", self.node_id, exc)
                await asyncio.sleep(0.5)

    def _dispatch(self, channel: str, data: Any) -> None:
        try:
            message = json.loads(data)
            if not isinstance(message, dict):
                raise ValueError("not an object")
            if channel.startswith(f"{self.prefix}bus:n:"):
                self._reply(message)
            else:
                self._event(channel.removeprefix(f"{self.prefix}bus:c:"), message)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("node %s: malformed bus message dropped: %s", self.node_id, exc)

    def _reply(self, message: dict[str, Any]) -> None:
        future = self._pending.pop(str(message["id"]), None)
        if future is None or future.done():
            return
        if message.get("ok"):
            future.set_result(message.get("result"))
        else:
            future.set_exception(
                MediaError(str(message.get("code", "internal")), str(message.get("message", "")))
            )

    def _event(self, cid: str, m: dict[str, Any]) -> None:
        ev, events = m["ev"], self._events
        if ev == "offer":
            slots = [SlotDescription(**s) for s in m["slots"]]
            events.offer(cid, str(m["pid"]), str(m["sdp"]), slots)
        elif ev == "producer_opened":
            events.producer_opened(cid, ProducerInfo(**m["producer"]))
        elif ev == "producer_closed":
            events.producer_closed(cid, ProducerInfo(**m["producer"]))
        elif ev == "session_failed":
            events.session_failed(cid, str(m["pid"]), str(m["reason"]))
        elif ev == "notice":
            events.notice(cid, str(m["pid"]), str(m["code"]), str(m["message"]))
        elif ev == "recording":
            events.recording_event(cid, dict(m["event"]))
        elif ev == "quality":
            events.quality(cid, [_quality_sample(s) for s in m["samples"]])
        else:
            raise ValueError(f"unknown event {ev!r}")

    # ------------------------------------------------------------ calling

    async def _call(self, cid: str, op: str, args: dict[str, Any], *, place: bool = False) -> Any:
        deadline = time.monotonic() + REDIS_WAIT_S
        while True:
            try:
                return await self._call_once(cid, op, args, place=place)
            except (RedisError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise MediaError(
                        "worker_unavailable", "the media service is unreachable"
                    ) from exc
                await asyncio.sleep(0.3)

    async def _call_once(self, cid: str, op: str, args: dict[str, Any], *, place: bool) -> Any:
        worker_id = self._workers.get(cid)
        if worker_id is None:
            worker_id = await self.registry.placement(cid)
            if worker_id is None and not place:
                raise MediaError("unexpected", "no media Worker holds this consultation")
            if place or worker_id is None:
                try:
                    worker_id = await self.registry.place(cid)
                except LookupError:
                    raise MediaError("worker_unavailable", "no media Worker is running") from None
            self._workers[cid] = worker_id
        return await self._ask(worker_id, cid, op, args)

    async def _ask(self, worker_id: str, cid: str, op: str, args: dict[str, Any]) -> Any:
        call_id = secrets.token_hex(8)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        command = {"id": call_id, "node": self.node_id, "op": op, "cid": cid, "args": args}
        try:
            await self.redis.publish(f"{self.prefix}bus:w:{worker_id}", json.dumps(command))
            async with asyncio.timeout(self._timeout):
                return await future
        except TimeoutError:
            raise MediaError(
                "worker_unavailable", "the media Worker did not answer in time"
            ) from None
        finally:
            self._pending.pop(call_id, None)

    async def _subscribe(self, cid: str) -> None:
        if self._pubsub is not None:
            await self._pubsub.subscribe(f"{self.prefix}bus:c:{cid}")

    async def _unsubscribe(self, cid: str) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(f"{self.prefix}bus:c:{cid}")

    # ------------------------------------------------------------ WorkerClient

    async def open_session(
        self,
        consultation_id: str,
        participant_id: str,
        *,
        publish: tuple[Kind, ...],
        subscribe: bool,
        video_codecs: frozenset[VideoCodec] | None = None,
    ) -> None:
        sessions = self._sessions.setdefault(consultation_id, set())
        if not sessions:
            # Before the call: the first offer must find us listening.
            await self._subscribe(consultation_id)
        sessions.add(participant_id)
        args = {
            "pid": participant_id,
            "publish": list(publish),
            "subscribe": subscribe,
            "video_codecs": sorted(video_codecs) if video_codecs is not None else None,
        }
        try:
            await self._call(consultation_id, "open_session", args, place=True)
        except MediaError:
            await self._forget(consultation_id, participant_id)
            raise

    async def _forget(self, consultation_id: str, participant_id: str) -> None:
        sessions = self._sessions.get(consultation_id)
        if sessions is None:
            return
        sessions.discard(participant_id)
        if not sessions:
            del self._sessions[consultation_id]
            self._workers.pop(consultation_id, None)
            await self._unsubscribe(consultation_id)

    async def close_session(self, consultation_id: str, participant_id: str) -> None:
        if participant_id not in self._sessions.get(consultation_id, ()):
            return
        try:
            await self._call(consultation_id, "close_session", {"pid": participant_id})
        except MediaError as exc:
            # A dead Worker took the session with it; nothing is left to close.
            log.info("closing %s on its Worker: %s", participant_id, exc.message)
        finally:
            await self._forget(consultation_id, participant_id)

    async def answer(self, consultation_id: str, participant_id: str, sdp: str) -> None:
        await self._call(consultation_id, "answer", {"pid": participant_id, "sdp": sdp})

    async def candidate(
        self,
        consultation_id: str,
        participant_id: str,
        candidate: str | None,
        sdp_mid: str | None,
        sdp_mline_index: int | None,
    ) -> None:
        args = {
            "pid": participant_id,
            "candidate": candidate,
            "sdp_mid": sdp_mid,
            "sdp_mline_index": sdp_mline_index,
        }
        await self._call(consultation_id, "candidate", args)

    async def pause_producers(
        self,
        consultation_id: str,
        participant_id: str,
        kind: Kind,
        paused: bool,
        source: Source | None = None,
    ) -> None:
        args: dict[str, Any] = {"pid": participant_id, "kind": kind, "paused": paused}
        if source is not None:
            args["source"] = source
        await self._call(consultation_id, "pause_producers", args)

    async def publish_extra(
        self, consultation_id: str, participant_id: str, source: ExtraSource
    ) -> None:
        args = {"pid": participant_id, "source": source}
        await self._call(consultation_id, "publish_extra", args)

    async def unpublish_extra(
        self, consultation_id: str, participant_id: str, source: ExtraSource
    ) -> None:
        args = {"pid": participant_id, "source": source}
        await self._call(consultation_id, "unpublish_extra", args)

    async def pause_consumers(
        self, consultation_id: str, subscriber_id: str, kind: Kind, paused: bool
    ) -> None:
        args = {"pid": subscriber_id, "kind": kind, "paused": paused}
        await self._call(consultation_id, "pause_consumers", args)

    async def follow_speaker(self, consultation_id: str, subscriber_id: str, follow: bool) -> None:
        args = {"pid": subscriber_id, "follow": follow}
        await self._call(consultation_id, "follow_speaker", args)

    async def start_recording(
        self,
        consultation_id: str,
        recording_id: str,
        roles: dict[str, str],
        consents: dict[str, bool],
        *,
        resume: bool = False,
    ) -> None:
        args = {
            "recording_id": recording_id,
            "roles": roles,
            "consents": consents,
            "resume": resume,
        }
        await self._call(consultation_id, "start_recording", args)

    async def recording_consent(
        self, consultation_id: str, participant_id: str, granted: bool, role: str | None
    ) -> None:
        args = {"pid": participant_id, "granted": granted, "role": role}
        await self._call(consultation_id, "recording_consent", args)

    async def stop_recording(self, consultation_id: str, reason: str) -> None:
        await self._call(consultation_id, "stop_recording", {"reason": reason})

    async def stats(self) -> WorkerStats:
        """Summed over every live Worker, each asked now."""
        total: dict[str, int] = dict.fromkeys(WorkerStats.__dataclass_fields__, 0)
        for worker_id in await self.registry.live_workers():
            try:
                answer = await self._ask(worker_id, "", "stats", {})
            except MediaError:
                continue  # dying: its rooms are being moved
            for name in total:
                total[name] += int(answer.get(name, 0))
        return WorkerStats(**total)

    async def metrics(self) -> list[WorkerMetrics]:
        """Every live Worker's, asked at once: a silent one is left out after the deadline."""
        workers = sorted(await self.registry.live_workers())
        answers = await asyncio.gather(
            *(self._ask(w, "", "metrics", {}) for w in workers), return_exceptions=True
        )
        found = []
        for worker_id, answer in zip(workers, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, MediaError):
                    raise answer
                continue  # dying: its rooms are being moved
            try:
                found.append(_worker_metrics(answer))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                log.warning("node %s: malformed metrics from %s: %s", self.node_id, worker_id, exc)
        return found

    # ------------------------------------------------------------ failover

    async def _watch_workers(self) -> None:
        while True:
            await asyncio.sleep(MONITOR_S)
            try:
                await self._check_workers()
            except (RedisError, OSError) as exc:
                # Redis down is not a Worker down: media goes on, check again later.
                log.info("node %s: cannot check Workers (%s)", self.node_id, exc)

    async def _check_workers(self) -> None:
        dead: dict[str, set[str]] = {}
        for cid, worker_id in list(self._workers.items()):
            if not await self.registry.alive(worker_id):
                dead.setdefault(worker_id, set()).add(cid)
        for worker_id, consultations in dead.items():
            log.warning(
                "node %s: media Worker %s is gone; moving %d consultation(s)",
                self.node_id,
                worker_id,
                len(consultations),
            )
            for cid in consultations:
                await self._move(cid, worker_id)

    async def _move(self, cid: str, dead_worker: str) -> None:
        try:
            new_worker = await self.registry.place(cid, avoid=frozenset({dead_worker}))
        except LookupError:
            log.error("consultation %s lost its media Worker and no other is alive", cid)
            return
        self._workers[cid] = new_worker
        # The sessions went with the Worker; the Room opens them again on the new one.
        self._sessions.pop(cid, None)
        await self._unsubscribe(cid)
        self._events.media_lost(cid, "media_moved")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def serve_worker(
    url: str,
    config: MediaConfig,
    *,
    recordings: RecordingFactory | None = None,
    ready: Callable[[str], Awaitable[None] | None] | None = None,
) -> None:
    """Run one Worker on the bus at ``url`` until cancelled (``teleconsult worker``)."""
    redis = aioredis.Redis.from_url(url)
    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        await redis.aclose()
        raise MediaError("worker_unavailable", f"cannot reach Redis: {exc}") from None
    server = WorkerServer(redis, config, recordings=recordings)
    if ready is not None:
        result = ready(server.id)
        if asyncio.iscoroutine(result):
            await result
    try:
        await server.run()
    finally:
        await redis.aclose()
