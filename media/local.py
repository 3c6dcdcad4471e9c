"""The embedded default: a WorkerClient whose Worker runs in this process, on this loop.

Every call goes straight through; events come back as plain calls on the same loop. What
crosses is still only ids and values, so a caller written against this works unchanged
against a Worker behind a bus.
"""

from __future__ import annotations

from media.client import ExtraSource, Kind, Source, WorkerEvents, WorkerMetrics, WorkerStats
from media.config import MediaConfig, VideoCodec
from media.worker import RecordingFactory, Worker

# The one Worker of a node without a bus, as /metrics labels it.
EMBEDDED_WORKER_ID = "embedded"


class LocalWorkerClient:
    """Implements ``media.client.WorkerClient``."""

    def __init__(
        self,
        config: MediaConfig,
        events: WorkerEvents,
        *,
        recordings: RecordingFactory | None = None,
    ) -> None:
        # The Worker itself, for in-process introspection (tests, the benchmark); callers
        # that drive media use the methods below.
        self.worker = Worker(config, events, recordings=recordings)

    async def open_session(
        self,
        consultation_id: str,
        participant_id: str,
        *,
        publish: tuple[Kind, ...],
        subscribe: bool,
        video_codecs: frozenset[VideoCodec] | None = None,
    ) -> None:
        self.worker.open_session(
            consultation_id,
            participant_id,
            publish=publish,
            subscribe=subscribe,
            video_codecs=video_codecs,
        )

    async def close_session(self, consultation_id: str, participant_id: str) -> None:
        await self.worker.close_session(consultation_id, participant_id)

    async def answer(self, consultation_id: str, participant_id: str, sdp: str) -> None:
        await self.worker.answer(consultation_id, participant_id, sdp)

    async def candidate(
        self,
        consultation_id: str,
        participant_id: str,
        candidate: str | None,
        sdp_mid: str | None,
        sdp_mline_index: int | None,
    ) -> None:
        await self.worker.candidate(
            consultation_id, participant_id, candidate, sdp_mid, sdp_mline_index
        )

    async def pause_producers(
        self,
        consultation_id: str,
        participant_id: str,
        kind: Kind,
        paused: bool,
        source: Source | None = None,
    ) -> None:
        self.worker.pause_producers(consultation_id, participant_id, kind, paused, source)

    async def publish_extra(
        self, consultation_id: str, participant_id: str, source: ExtraSource
    ) -> None:
        self.worker.publish_extra(consultation_id, participant_id, source)

    async def unpublish_extra(
        self, consultation_id: str, participant_id: str, source: ExtraSource
    ) -> None:
        self.worker.unpublish_extra(consultation_id, participant_id, source)

    async def pause_consumers(
        self, consultation_id: str, subscriber_id: str, kind: Kind, paused: bool
    ) -> None:
        self.worker.pause_consumers(consultation_id, subscriber_id, kind, paused)

    async def follow_speaker(self, consultation_id: str, subscriber_id: str, follow: bool) -> None:
        self.worker.follow_speaker(consultation_id, subscriber_id, follow)

    async def start_recording(
        self,
        consultation_id: str,
        recording_id: str,
        roles: dict[str, str],
        consents: dict[str, bool],
        *,
        resume: bool = False,
    ) -> None:
        self.worker.start_recording(consultation_id, recording_id, roles, consents, resume=resume)

    async def recording_consent(
        self, consultation_id: str, participant_id: str, granted: bool, role: str | None
    ) -> None:
        self.worker.recording_consent(consultation_id, participant_id, granted, role)

    async def stop_recording(self, consultation_id: str, reason: str) -> None:
        self.worker.stop_recording(consultation_id, reason)

    async def stats(self) -> WorkerStats:
        return self.worker.stats()

    async def metrics(self) -> list[WorkerMetrics]:
        return [self.worker.metrics(EMBEDDED_WORKER_ID)]

    async def close(self) -> None:
        await self.worker.close()
