"""Media a participant sends where the Worker did not ask for any is dropped, unseen.

An observer that answers ``sendrecv`` and sends a clip: its answer is refused (``bad_sdp``);
and were the check bypassed, the receivers nobody asked for drop every packet before any
depacketizer, jitter buffer or decoder. Either way the others' call goes on at full frame
rate, nothing is decoded and the server's memory does not grow.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from aiortc import RTCSessionDescription

import media.answer
from media.clips import Clip, ClipTrack
from rooms.roles import Role
from signaling import protocol as p
from signaling.bot import Bot
from tests.integration.conftest import Counter, Harness

SENDING_S = 10.0
# Generous: the decoded frames of the clip alone pile up at ~14 MB/s when nothing drops them.
RSS_GROWTH_LIMIT_MB = 60.0
# Full frame rate is 30 fps; leave room for a loaded machine.
MIN_FPS = 24.0


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class SendrecvObserver(Bot):
    """Answers every m-line ``sendrecv`` and sends a clip on each, as a hostile client would."""

    def __init__(self, *args: object, clips: dict[str, Clip], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._clips = clips
        self.hostile_tracks: list[ClipTrack] = []

    async def _answer(self, offer: p.Offer) -> None:
        assert self.pc is not None
        self.offers += 1
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        for slot in offer.tracks:
            self._slots[slot.mid] = slot
            transceiver = next(t for t in self.pc.getTransceivers() if t.mid == slot.mid)
            inbound = self.inbound.get(slot.mid)
            if inbound is not None:
                inbound.participant_id = slot.participantId
            if transceiver.sender.track is None:
                track = ClipTrack(self._clips[slot.kind])
                self.hostile_tracks.append(track)
                transceiver.sender.replaceTrack(track)
            transceiver.direction = "sendrecv"
            # aiortc would answer a sendonly offer recvonly: pretend it offered sendrecv.
            transceiver._offerDirection = "sendrecv"  # type: ignore[attr-defined]
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        await self.send(p.Answer(type="answer", sdp=self.pc.localDescription.sdp))

    def close_tracks(self) -> None:
        for track in self.hostile_tracks:
            track.stop()


async def _call_with_hostile_observer(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip
) -> tuple[Bot, Bot, SendrecvObserver]:
    doctor, patient = (
        harness.bot(harness.token(consultation, role), video=video_clip, audio=audio_clip)
        for role in (Role.doctor, Role.patient)
    )
    await asyncio.gather(doctor.connect(), patient.connect())
    assert await doctor.wait_for(
        lambda: (
            doctor.frames_from(patient.participant_id, "video") > 30
            and patient.frames_from(doctor.participant_id, "video") > 30
        ),
        timeout=15,
    )
    observer = SendrecvObserver(
        harness.base_url,
        harness.token(consultation, Role.observer),
        clips={"video": video_clip, "audio": audio_clip},
    )
    harness.bots.append(observer)
    await observer.connect()
    return doctor, patient, observer


async def _the_call_goes_on(doctor: Bot, patient: Bot, seconds: float) -> float:
    """Watch the doctor and patient for ``seconds``; return the server's RSS growth in MB."""
    await asyncio.sleep(1.0)  # let whatever the hostile answer started get going
    rss_before = _rss_mb()
    before = (
        doctor.frames_from(patient.participant_id, "video"),
        patient.frames_from(doctor.participant_id, "video"),
    )
    started = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    after = (
        doctor.frames_from(patient.participant_id, "video"),
        patient.frames_from(doctor.participant_id, "video"),
    )
    for b, a in zip(before, after, strict=True):
        assert (a - b) / elapsed >= MIN_FPS, f"{(a - b) / elapsed:.1f} fps"
    return _rss_mb() - rss_before


async def test_a_sendrecv_answer_from_an_observer_is_refused(
    harness: Harness, consultation: str, video_clip: Clip, audio_clip: Clip, decoder_calls: Counter
) -> None:
    doctor, patient, observer = await _call_with_hostile_observer(
        harness, consultation, video_clip, audio_clip
    )
    assert await observer.wait_for(lambda: observer.errors != [], 5)
    assert [e.code for e in observer.errors] == ["bad_sdp"]
    assert "sendrecv" in observer.errors[0].message
    session = harness.worker.session(consultation, observer.participant_id)
    assert session is not None and session.awaiting_answer  # the offer stays outstanding
    growth = await _the_call_goes_on(doctor, patient, SENDING_S)
    assert growth < RSS_GROWTH_LIMIT_MB, f"RSS grew {growth:.0f} MB"
    assert decoder_calls.calls == 0
    # It never answered acceptably, so it is dropped like any client that does not answer.
    assert await observer.wait_for(lambda: observer.bye is not None, 10)
    observer.close_tracks()


async def test_media_on_m_lines_nobody_asked_for_is_dropped_unseen(
    harness: Harness,
    consultation: str,
    video_clip: Clip,
    audio_clip: Clip,
    decoder_calls: Counter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Defence in depth: with the answer's directions unchecked, the tap must still hold.
    monkeypatch.setattr(media.answer, "direction_allowed", lambda offered, answered: True)
    doctor, patient, observer = await _call_with_hostile_observer(
        harness, consultation, video_clip, audio_clip
    )
    session = harness.worker.session(consultation, observer.participant_id)
    assert session is not None
    # The observer's own call works: it receives everyone.
    assert await observer.wait_for(
        lambda: all(
            observer.frames_from(x.participant_id, "video") > 30 for x in (doctor, patient)
        ),
        timeout=15,
    )
    assert observer.errors == []
    growth = await _the_call_goes_on(doctor, patient, SENDING_S)
    assert growth < RSS_GROWTH_LIMIT_MB, f"RSS grew {growth:.0f} MB"
    assert decoder_calls.calls == 0
    # What it sent did arrive, and was dropped: ~50 audio + video packets a second per m-line.
    assert session.unrequested_rtp_packets > 100 * SENDING_S
    assert session.producers == {}
    assert harness.worker.stats().producers == 4
    observer.close_tracks()
