"""Recording and composing benchmarks: ``python -m recordings.bench [--seconds 10]``.

Feeds pre-encoded clips (media/clips.py) straight into a Recorder, as the Producer hook
would, so the recorder's CPU cost is measured without aiortc around it; then composes the
recording and reports the speed against real time. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from media.clips import opus_clip, vp8_clip
from recordings.composer import ComposeOptions, compose
from recordings.recorder import Recorder
from recordings.store import RecordingStore

ROLES = {"Pdoctor0001": "doctor", "Pexpert0002": "expert", "Ppatient003": "patient"}
VIDEO_TB = Fraction(1, 90000)
AUDIO_TB = Fraction(1, 48000)


def record_synthetic_call(
    store: RecordingStore,
    consultation: str,
    *,
    seconds: float = 10.0,
    roles: dict[str, str] | None = None,
    width: int = 640,
    height: int = 480,
) -> tuple[Recorder, float]:
    """Record ``seconds`` of a call (VP8 + Opus per participant). Returns (recorder, CPU s)."""
    roles = roles or ROLES
    video = vp8_clip(width, height, seconds=seconds)
    audio = opus_clip(seconds=seconds)
    rec = Recorder(store, consultation)
    for pid, role in roles.items():
        rec.consent(pid, True, role=role)
    rec.start(roles)
    # A day into the Worker's clock, each participant joining a little later than the last.
    base_s = 86400.0
    cpu = time.process_time()
    for k, (pid, role) in enumerate(roles.items()):
        rec.add_track(f"v-{pid}", pid, role, "video", "video/VP8")
        rec.add_track(f"a-{pid}", pid, role, "audio", "audio/opus")
        start = base_s + 0.1 * k
        for i, data in enumerate(video.frames):
            pts = round(start * 90000) + i * video.ticks_per_frame
            rec.write(f"v-{pid}", data, pts, VIDEO_TB, i == 0)
        for i, data in enumerate(audio.frames):
            pts = round(start * 48000) + i * audio.ticks_per_frame
            rec.write(f"a-{pid}", data, pts, AUDIO_TB, True)
    rec.stop()
    return rec, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--preset", default=ComposeOptions.preset)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = RecordingStore(Path(tmp), master_key=os.urandom(32))
        rec, cpu = record_synthetic_call(store, "bench-consultation", seconds=args.seconds)
        streams = 2 * len(ROLES)
        started = time.monotonic()
        cpu0 = time.process_time()
        entry = compose(
            store, "bench-consultation", rec.recording, options=ComposeOptions(preset=args.preset)
        )
        wall = time.monotonic() - started
        result = {
            "recorded_media_s": args.seconds,
            "recorder_streams": streams,
            "recorder_cpu_s": round(cpu, 4),
            # CPU per stream as a share of one core while the stream plays in real time.
            "recorder_core_share_per_stream_pct": round(100 * cpu / (streams * args.seconds), 3),
            "compose_participants": len(ROLES),
            "compose_input": "640x480 VP8 30 fps + Opus, per participant",
            "compose_output": f"{entry.width}x{entry.height} H.264 ({args.preset}) + AAC",
            "compose_media_s": round(entry.duration_s, 3),
            "compose_wall_s": round(wall, 3),
            "compose_cpu_s": round(time.process_time() - cpu0, 3),
            "compose_speed_x_realtime": round(entry.duration_s / wall, 2),
            "cpus": os.cpu_count(),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
